//! `ImageBackbone::with_input_size`: convolutional presets run at other image sizes, ViTs refuse.

#[cfg(feature = "flex")] // only the flex-only tests count parameters
use burn::module::Module;
use burn::prelude::*;
use vprompt_backbone::*;
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> Vec<f32> {
    npy::read(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR"))).to_f32()
}

/// At 160 x 288, Lite0's logits and features equal PyTorch's on the same ONNX graph
/// (`tests/reference/make_lite0_resized_reference.py`, through onnx2torch), so the resized
/// backbone computes the same network, not just outputs of the right shape.
fn lite0_matches_pytorch_at_160_by_288(device: &Device) {
    let [h, w] = [160, 288];
    let backbone = ImageBackbone::efficientnet_lite0(device)
        .unwrap()
        .with_input_size([h, w])
        .unwrap();
    assert_eq!(backbone.input_size(), [h, w]);
    // x[c, y, x] = 0.9 sin(0.05 y + 0.07 x + c), as the script computes it.
    let input: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            (0.9 * (0.05 * y as f64 + 0.07 * x as f64 + c as f64).sin()) as f32
        })
        .collect();
    let input = Tensor::<4>::from_data(TensorData::new(input, [1, 3, h, w]), device);
    let (features, logits) = backbone.forward_features(input).unwrap();
    assert_close(
        &to_vec(logits),
        &reference("lite0_160x288_logits.npy"),
        1e-4,
        1e-4,
    );
    assert_close(
        &to_vec(features),
        &reference("lite0_160x288_features.npy"),
        1e-4,
        1e-4,
    );
    // The size it was resized to is now the only one it takes.
    let err = backbone
        .forward(Tensor::zeros([1, 3, 224, 224], device))
        .unwrap_err();
    assert!(matches!(err, BackboneError::InputShape { .. }), "{err}");
}

device_tests!(lite0_matches_pytorch_at_160_by_288);

/// Non-square sizes and the smallest allowed side give outputs of the preset's sizes; the
/// resized backbone is still frozen and still trains a prompt (the input gradient exists).
#[cfg(feature = "flex")]
#[test]
fn resized_resnet_runs_and_passes_gradients() {
    let device = Device::flex().autodiff();
    let backbone = ImageBackbone::with_random_weights(Preset::TinyResNet, 0, 0.1, &device).unwrap();
    for size in [[48, 40], [32, 32], [64, 96]] {
        let backbone = backbone.clone().with_input_size(size).unwrap();
        let x = Tensor::<4>::random(
            [2, 3, size[0], size[1]],
            burn::tensor::Distribution::Default,
            &device,
        )
        .require_grad();
        let (features, logits) = backbone.forward_features(x.clone()).unwrap();
        assert_eq!((features.dims(), logits.dims()), ([2, 16], [2, 10]), "{size:?}");
        let grads = logits.sum().backward();
        let grad = to_vec(x.grad(&grads).expect("input gradient"));
        assert!(grad.iter().any(|g| *g != 0.0), "{size:?}");
        assert_eq!(
            burn::optim::GradientsParams::from_grads(grads, &backbone).len(),
            0,
            "weights stay frozen"
        );
    }
    assert_eq!(
        backbone.num_params(),
        backbone.clone().with_input_size([40, 40]).unwrap().num_params()
    );
}

#[cfg(feature = "flex")]
#[test]
fn bad_sizes_and_vits_are_refused() {
    let device = Device::flex();
    let resnet = ImageBackbone::with_random_weights(Preset::TinyResNet, 0, 0.1, &device).unwrap();
    for size in [[31, 64], [64, 0], [1025, 64], [64, usize::MAX]] {
        let err = resnet.clone().with_input_size(size).unwrap_err();
        assert!(
            matches!(&err, BackboneError::InvalidArgument(m) if m.contains("32..=1024")),
            "{size:?}: {err}"
        );
    }
    let vit = ImageBackbone::with_random_weights(Preset::TinyVit, 0, 0.1, &device).unwrap();
    let err = vit.clone().with_input_size([64, 64]).unwrap_err();
    assert!(
        matches!(&err, BackboneError::InvalidArgument(m) if m.contains("tiny-vit") && m.contains("position embeddings")),
        "{err}"
    );
    // The same check, without a model: what configs are validated with.
    assert!(Preset::ResNet50.check_input_size([320, 256]).is_ok());
    assert!(Preset::ClipVitB32Image.check_input_size([224, 224]).is_ok());
    assert!(Preset::ClipVitB32Image.check_input_size([256, 256]).is_err());
    assert!(Preset::TinyClipText.check_input_size([1, 77]).is_ok());
    let err = Preset::TinyClipText.check_input_size([1, 78]).unwrap_err();
    assert!(!err.to_string().contains("position embeddings"), "{err}");
    // Asking for the size it already has is not a change.
    assert_eq!(vit.with_input_size([32, 32]).unwrap().input_size(), [32, 32]);
    let resizable: Vec<_> = Preset::ALL.into_iter().filter(|p| p.is_resizable()).collect();
    assert_eq!(
        resizable,
        [
            Preset::EfficientNetLite0,
            Preset::ResNet18,
            Preset::ResNet50,
            Preset::ResNeXt101_32x8d,
            Preset::BitMR50x1,
            Preset::TinyResNet,
            Preset::TinyResNet50,
            Preset::TinyResNeXt,
            Preset::TinyBit
        ]
    );
}
