//! The wrapped model gives onnxruntime's outputs on the fixture's reference input.
use burn::prelude::*;
use own_onnx_backbone::MyBackbone;
use vprompt::Backbone;
use vprompt_testkit::{assert_close, npy, to_vec};

#[test]
fn wrapped_model_matches_onnxruntime() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/vprompt-backbone/tests/fixtures"
    );
    let input = npy::read(format!("{dir}/tiny_resnet_input.npy"));
    let device = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(input.to_f32(), [4, 3, 32, 32]), &device);
    let backbone = MyBackbone::new(&device);
    let (features, logits) = backbone.forward_features(x).unwrap();
    assert_close(
        &to_vec(logits),
        &npy::read(format!("{dir}/tiny_resnet_logits.npy")).to_f32(),
        1e-5,
        1e-4,
    );
    assert_close(
        &to_vec(features),
        &npy::read(format!("{dir}/tiny_resnet_features.npy")).to_f32(),
        1e-5,
        1e-4,
    );
    let err = backbone
        .forward_normalized(Tensor::<4>::zeros([1, 3, 28, 28], &device))
        .unwrap_err();
    assert!(err.to_string().contains("[batch, 3, 32, 32]"), "{err}");
}
