//! The embedded EfficientNet-Lite0 against onnxruntime and PyTorch on the same ONNX graph
//! (`tests/reference/make_lite0_reference.py`), and on real photos.

use burn::prelude::*;
use vprompt_backbone::*;
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn tensor(array: &npy::NpyArray, device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(array.to_f32(), shape), device)
}

/// Logits and features equal onnxruntime's to 1e-4 absolute (outputs are O(10)).
fn outputs_match_onnxruntime(device: &Device) {
    let backbone = ImageBackbone::efficientnet_lite0(device).unwrap();
    let input = tensor(&reference("lite0_random_input.npy"), device);
    let (features, logits) = backbone.forward_features(input).unwrap();
    assert_eq!(features.dims(), [1, 1280]);
    assert_close(
        &to_vec(logits),
        &reference("lite0_random_logits.npy").to_f32(),
        1e-4,
        1e-4,
    );
    assert_close(
        &to_vec(features),
        &reference("lite0_random_features.npy").to_f32(),
        1e-4,
        1e-4,
    );
}

/// Real photos, as u8 pixels normalised by the backbone itself: the expected ImageNet class is top-1.
fn photos_are_recognised(device: &Device) {
    let backbone = ImageBackbone::efficientnet_lite0(device).unwrap();
    let photos = reference("lite0_photos_u8.npy");
    let pixels = tensor(&photos, device) / 255.0;
    let logits = backbone.forward(pixels).unwrap();
    let expected = reference("lite0_photos_logits.npy").to_f32();
    let logits = to_vec(logits);
    assert_close(&logits, &expected, 2e-4, 1e-4);
    let names = backbone.class_names().unwrap();
    let top1: Vec<&str> = logits
        .chunks(1000)
        .map(|row| {
            let best = (0..1000).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            names[best].as_str()
        })
        .collect();
    // scikit-image's chelsea (a cat), coffee (an espresso cup) and rocket (a Falcon 9 launch).
    assert_eq!(top1, ["tiger cat", "espresso", "missile"]);
}

/// The gradient of a logit with respect to the input, through the frozen model, equals PyTorch
/// autograd's on the same graph.
fn input_gradient_matches_pytorch(device: &Device) {
    let ad = device.clone().autodiff();
    let backbone = ImageBackbone::efficientnet_lite0(&ad).unwrap();
    let photos = reference("lite0_photos_u8.npy");
    let cat: Vec<f32> = photos.to_f32()[..3 * 224 * 224]
        .iter()
        .map(|v| (v / 255.0 - 0.5) / 0.5)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(cat, [1, 3, 224, 224]), &ad).require_grad();
    let logits = backbone.forward_normalized(x.clone()).unwrap();
    let grads = logits.slice([0..1, 282..283]).sum().backward();
    let grad = to_vec(x.grad(&grads).expect("input gradient"));
    let abs_sum: f64 = grad.iter().map(|g| g.abs() as f64).sum();
    let expected_sum = reference("lite0_grad_abs_sum.npy").values[0];
    assert!(
        (abs_sum - expected_sum).abs() / expected_sum < 1e-4,
        "{abs_sum} vs {expected_sum}"
    );
    let indices = reference("lite0_grad_indices.npy").values;
    let sampled: Vec<f32> = indices.iter().map(|&i| grad[i as usize]).collect();
    assert_close(&sampled, &reference("lite0_grad_values.npy").to_f32(), 1e-6, 1e-3);
}

/// Frozen: no parameter takes a gradient, on an autodiff device too.
fn weights_are_frozen(device: &Device) {
    let ad = device.clone().autodiff();
    let backbone = ImageBackbone::efficientnet_lite0(&ad).unwrap();
    let x = Tensor::<4>::zeros([1, 3, 224, 224], &ad).require_grad();
    let grads = backbone.forward_normalized(x.clone()).unwrap().sum().backward();
    assert_eq!(
        burn::optim::GradientsParams::from_grads(grads, &backbone).len(),
        0
    );
}

device_tests!(
    outputs_match_onnxruntime,
    photos_are_recognised,
    input_gradient_matches_pytorch,
    weights_are_frozen
);

#[cfg(feature = "flex")]
#[test]
fn preset_facts() {
    let backbone = ImageBackbone::efficientnet_lite0(&Device::flex()).unwrap();
    assert_eq!(backbone.name(), "efficientnet-lite0");
    assert_eq!(backbone.input_size(), [224, 224]);
    assert_eq!(backbone.normalization(), &Normalization::HALF);
    assert_eq!(
        (
            backbone.output_kind(),
            backbone.output_dim(),
            backbone.feature_dim()
        ),
        (OutputKind::Logits, 1000, 1280)
    );
    let names = backbone.class_names().unwrap();
    assert_eq!(
        (names.len(), names[0].as_str(), names[999].as_str()),
        (1000, "tench", "toilet tissue")
    );
}
