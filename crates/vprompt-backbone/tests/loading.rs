//! Weights files that are missing, truncated, of another model or of the wrong size, and inputs of
//! the wrong shape: each a typed error naming the file and what was expected, never a panic.

use burn::prelude::*;
use vprompt_backbone::*;

#[cfg(feature = "flex")]
fn lite0_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("lite0.bpk");
    ImageBackbone::efficientnet_lite0(&Device::flex())
        .unwrap()
        .save(&path)
        .unwrap();
    path
}

#[cfg(feature = "flex")]
#[test]
fn a_saved_backbone_reloads_identically() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = lite0_file(dir.path());
    let loaded = ImageBackbone::load(Preset::EfficientNetLite0, &path, &device).unwrap();
    let embedded = ImageBackbone::efficientnet_lite0(&device).unwrap();
    let x = Tensor::<4>::random([1, 3, 224, 224], burn::tensor::Distribution::Default, &device);
    assert_eq!(
        loaded.forward(x.clone()).unwrap().into_data(),
        embedded.forward(x).unwrap().into_data()
    );
    // The file is byte-for-byte the committed one: no random parameter ids inside.
    let committed = vprompt_backbone::efficientnet_lite0_weights();
    assert!(std::fs::read(&path).unwrap() == committed);
    // The halves join into the file whose sha256 `models/efficientnet-lite0/SHA256SUMS` records
    // (508be298...; its FNV-1a, computed from the same bytes, is checked here).
    assert_eq!(committed.len(), 18_536_704);
    assert_eq!(
        vprompt_core::fingerprint::fnv1a(vprompt_core::fingerprint::OFFSET, &committed),
        0xf63f_cf04_a6a3_8950
    );
}

#[cfg(feature = "flex")]
#[test]
fn missing_weights_say_how_to_make_them() {
    let err =
        ImageBackbone::load(Preset::ResNet50, "/nonexistent/resnet50.bpk", &Device::flex()).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::MissingWeights {
                preset: "resnet50",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("scripts/export_onnx.py resnet50-v1"),
        "{message}"
    );
    assert!(message.contains("vprompt import resnet50"), "{message}");
    assert!(message.contains("/nonexistent/resnet50.bpk"), "{message}");
}

#[cfg(feature = "flex")]
#[test]
fn weights_of_another_preset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = lite0_file(dir.path());
    let err = ImageBackbone::load(Preset::ResNet50, &path, &Device::flex()).unwrap_err();
    assert!(
        matches!(err, BackboneError::WrongModel { expected: "resnet50", ref found, .. } if found == "efficientnet-lite0"),
        "{err}"
    );
}

#[cfg(feature = "flex")]
#[test]
fn truncated_and_foreign_files_are_refused() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(lite0_file(dir.path())).unwrap();
    for (name, content) in [
        ("truncated.bpk", &bytes[..bytes.len() / 3]),
        ("header-only.bpk", &bytes[..100]),
        ("text.bpk", &b"not weights"[..]),
        ("empty.bpk", &b""[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = ImageBackbone::load(Preset::EfficientNetLite0, &path, &device).unwrap_err();
        assert!(
            matches!(err, BackboneError::InvalidWeights { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[cfg(feature = "flex")]
#[test]
fn untagged_weights_of_another_architecture_name_the_tensors() {
    // A Burnpack file without vprompt's preset tag (as burn-onnx writes them): the tensor check
    // catches it, naming what is missing and what is extra.
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("untagged.bpk");
    let vit = ImageBackbone::with_random_weights(Preset::TinyVit, 0, 0.02, &device).unwrap();
    let mut store = burn_store::BurnpackStore::from_file(&path).auto_extension(false);
    burn_store::ModuleSnapshot::save_into(&vit, &mut store).unwrap();
    let err = ImageBackbone::load(Preset::TinyResNet, &path, &device).unwrap_err();
    let BackboneError::TensorMismatch { problems, preset, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*preset, "tiny-resnet");
    assert!(
        problems.iter().any(|p| p.starts_with("missing tensor `")),
        "{err}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("unexpected tensor `")),
        "{err}"
    );
}

#[cfg(feature = "flex")]
#[test]
fn inputs_of_the_wrong_shape_are_refused() {
    let device = Device::flex();
    let backbone = ImageBackbone::efficientnet_lite0(&device).unwrap();
    for shape in [
        [1, 3, 200, 224],
        [1, 1, 224, 224],
        [2, 4, 224, 224],
        [0, 3, 224, 224],
    ] {
        let err = backbone
            .forward_normalized(Tensor::<4>::zeros(shape, &device))
            .unwrap_err();
        assert!(
            matches!(err, BackboneError::InputShape { ref actual, .. } if actual == &shape),
            "{err}"
        );
        assert!(err.to_string().contains("[batch, 3, 224, 224]"), "{err}");
    }
    let text = TextEncoder::with_random_weights(Preset::TinyClipText, 0, 0.02, &device).unwrap();
    let err = text
        .forward(Tensor::<2, Int>::zeros([2, 76], &device))
        .unwrap_err();
    assert!(err.to_string().contains("[batch, 77]"), "{err}");
}

#[cfg(feature = "flex")]
#[test]
fn modality_and_names_are_checked() {
    let device = Device::flex();
    let err = ImageBackbone::with_random_weights(Preset::ClipVitB32Text, 0, 0.02, &device).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::WrongModality {
                constructor: "TextEncoder",
                ..
            }
        ),
        "{err}"
    );
    let err = TextEncoder::load(Preset::EfficientNetLite0, "x.bpk", &device).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::WrongModality {
                constructor: "ImageBackbone",
                ..
            }
        ),
        "{err}"
    );
    for std in [f64::NAN, -1.0, f64::INFINITY] {
        let err = ImageBackbone::with_random_weights(Preset::TinyResNet, 0, std, &device).unwrap_err();
        assert!(matches!(err, BackboneError::InvalidArgument(_)), "{err}");
    }
    let err = "resnet-50".parse::<Preset>().unwrap_err();
    assert!(err.to_string().contains("resnet50"), "{err}");
    for preset in Preset::ALL {
        assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
    }
}

#[cfg(feature = "flex")]
#[test]
fn normalization_matches_its_formula() {
    let device = Device::flex();
    let pixels: Vec<f32> = (0..3 * 4).map(|k| k as f32 / 11.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [1, 3, 2, 2]), &device);
    for norm in [Normalization::IMAGENET, Normalization::CLIP, Normalization::HALF] {
        let out = vprompt_testkit::to_vec(norm.apply(x.clone()));
        let expected: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(k, v)| (v - norm.mean[k / 4]) / norm.std[k / 4])
            .collect();
        vprompt_testkit::assert_close(&out, &expected, 1e-6, 1e-6);
        let back = vprompt_testkit::to_vec(norm.invert(norm.apply(x.clone())));
        vprompt_testkit::assert_close(&back, &pixels, 1e-6, 1e-6);
    }
}

/// A loaded backbone no longer needs its file: replacing or deleting the weights file after
/// `load` changes nothing (a lazily-reading store once read tensors after `load` had returned on
/// wgpu). Run on wgpu by `scripts/test-wgpu.sh`.
fn a_loaded_backbone_does_not_need_its_file(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bpk");
    let original = ImageBackbone::with_random_weights(Preset::TinyResNet, 1, 0.1, device).unwrap();
    original.save(&path).unwrap();
    let loaded = ImageBackbone::load(Preset::TinyResNet, &path, device).unwrap();
    // Replace the file by other weights, then delete it, before the loaded model is first used.
    ImageBackbone::with_random_weights(Preset::TinyResNet, 2, 0.1, device)
        .unwrap()
        .save(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let [h, w] = loaded.input_size();
    let x = Tensor::<4>::random([2, 3, h, w], burn::tensor::Distribution::Default, device);
    let got = vprompt_testkit::to_vec(loaded.forward(x.clone()).unwrap());
    let want = vprompt_testkit::to_vec(original.forward(x).unwrap());
    vprompt_testkit::assert_close(&got, &want, 1e-4, 1e-4);
}

vprompt_testkit::device_tests!(a_loaded_backbone_does_not_need_its_file);
