//! The bring-your-own-weights path on the committed tiny fixtures (random-weight models of the
//! ResNet, CLIP ViT and CLIP text families, `crates/vprompt-backbone/tests/fixtures/`):
//! ONNX -> burn-onnx code (equal to the committed code) -> checked weights file -> frozen backbone
//! whose outputs and input gradients equal onnxruntime's and PyTorch's.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use vprompt_backbone::import::{self, committed_code, import_weights};
use vprompt_backbone::*;
use vprompt_testkit::{assert_close, npy, to_vec};

/// burn-onnx installs a DEBUG-level log subscriber unless one exists; keep test output readable.
fn quiet() {
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vprompt-backbone/tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> npy::NpyArray {
    npy::read(fixture(name))
}

fn image_input(name: &str, device: &Device) -> Tensor<4> {
    let array = reference(name);
    let shape: [usize; 4] = array.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(array.to_f32(), shape), device)
}

/// The committed `tiny_resnet.bpk` (the weights the training tests, the examples and the
/// benches load, so that none of them needs burn-onnx, whose `import` feature turns on Burn's
/// `flex`) is exactly what importing the committed ONNX writes.
#[test]
fn the_committed_tiny_resnet_weights_are_the_import_of_its_onnx() {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny_resnet.bpk");
    import_weights(Preset::TinyResNet, &fixture("tiny_resnet.onnx"), &path).unwrap();
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(fixture("tiny_resnet.bpk")).unwrap(),
        "regenerate it: vprompt import tiny-resnet crates/vprompt-backbone/tests/fixtures/tiny_resnet.onnx \
         crates/vprompt-backbone/tests/fixtures/tiny_resnet.bpk"
    );
}

/// The CI regeneration check: burn-onnx, run on each committed fixture, produces exactly the
/// committed architecture code. (The full-size presets are checked the same way by
/// `cargo run --release -p vprompt-codegen -- check --onnx-dir DIR` on their exports.)
#[test]
fn committed_code_is_what_burn_onnx_generates() {
    quiet();
    for preset in [
        Preset::TinyResNet,
        Preset::TinyResNet50,
        Preset::TinyResNeXt,
        Preset::TinyBit,
        Preset::TinyVit,
        Preset::TinyClipText,
    ] {
        let generated = import::generate(&fixture(&format!("{}.onnx", preset.export_name()))).unwrap();
        assert!(
            generated.code == committed_code(preset),
            "{preset}: committed code is stale; run `cargo run --release -p vprompt-codegen -- generate`"
        );
    }
}

fn imported(preset: Preset, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{preset}.bpk"));
    let report = import_weights(preset, &fixture(&format!("{}.onnx", preset.export_name())), &out).unwrap();
    assert_eq!(report.output, out);
    assert!(report.tensors > 0 && report.values > 0);
    out
}

#[test]
fn tiny_resnet_with_batchnorm_matches_onnxruntime_and_pytorch() {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let weights = imported(Preset::TinyResNet, dir.path());
    let device = Device::flex();
    let backbone = ImageBackbone::load(Preset::TinyResNet, &weights, &device).unwrap();
    let x = image_input("tiny_resnet_input.npy", &device);
    let (features, logits) = backbone.forward_features(x.clone()).unwrap();
    assert_close(
        &to_vec(features),
        &reference("tiny_resnet_features.npy").to_f32(),
        1e-5,
        1e-4,
    );
    assert_close(
        &to_vec(logits),
        &reference("tiny_resnet_logits.npy").to_f32(),
        1e-5,
        1e-4,
    );
    // BatchNorm uses its running statistics: one image alone gives the same row as in the batch
    // (batch statistics would change it).
    let single = backbone
        .forward_normalized(x.clone().slice([1..2, 0..3, 0..32, 0..32]))
        .unwrap();
    assert_close(
        &to_vec(single),
        &reference("tiny_resnet_logits.npy").to_f32()[10..20],
        1e-5,
        1e-4,
    );

    // Input gradient of sum(logits[:, 0]) through the frozen model on an autodiff device.
    let ad = device.autodiff();
    let backbone = ImageBackbone::load(Preset::TinyResNet, &weights, &ad).unwrap();
    let x = image_input("tiny_resnet_input.npy", &ad).require_grad();
    let mut grads = backbone
        .forward_normalized(x.clone())
        .unwrap()
        .slice([0..4, 0..1])
        .sum()
        .backward();
    let grad = to_vec(x.grad_remove(&mut grads).unwrap());
    assert_eq!(
        burn::optim::GradientsParams::from_grads(grads, &backbone).len(),
        0,
        "frozen weights"
    );
    assert_close(
        &grad,
        &reference("tiny_resnet_input_grad.npy").to_f32(),
        1e-6,
        1e-3,
    );
}

#[test]
fn tiny_vit_matches_onnxruntime_and_pytorch() {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let weights = imported(Preset::TinyVit, dir.path());
    let ad = Device::flex().autodiff();
    let backbone = ImageBackbone::load(Preset::TinyVit, &weights, &ad).unwrap();
    let x = image_input("tiny_vit_input.npy", &ad).require_grad();
    let embedding = backbone.forward_normalized(x.clone()).unwrap();
    assert_close(
        &to_vec(embedding.clone()),
        &reference("tiny_vit_embedding.npy").to_f32(),
        1e-5,
        1e-4,
    );
    let grads = embedding.slice([0..4, 0..1]).sum().backward();
    let grad = to_vec(x.grad(&grads).unwrap());
    assert_close(&grad, &reference("tiny_vit_input_grad.npy").to_f32(), 1e-6, 1e-3);
}

#[test]
fn tiny_clip_text_matches_onnxruntime() {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let weights = imported(Preset::TinyClipText, dir.path());
    let device = Device::flex();
    let encoder = TextEncoder::load(Preset::TinyClipText, &weights, &device).unwrap();
    let tokens = reference("tiny_clip_text_input.npy");
    let ids: Vec<i64> = tokens.values.iter().map(|&v| v as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [4, 77]), &device);
    let embedding = encoder.forward(ids).unwrap();
    assert_close(
        &to_vec(embedding),
        &reference("tiny_clip_text_text_embedding.npy").to_f32(),
        1e-5,
        1e-4,
    );
}

#[test]
fn imports_of_the_wrong_thing_are_refused() {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bpk");

    // Another architecture: the generated code differs from the preset's.
    let err = import_weights(Preset::TinyResNet, &fixture("tiny_vit.onnx"), &out).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::ArchitectureMismatch {
                preset: "tiny-resnet",
                ..
            }
        ),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written when the check fails");

    let missing = dir.path().join("missing.onnx");
    let err = import_weights(Preset::TinyResNet, &missing, &out).unwrap_err();
    assert!(
        matches!(err, BackboneError::Io { ref path, .. } if path == &missing),
        "{err}"
    );

    // An empty file is not "a graph that differs".
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = import_weights(Preset::TinyResNet, &empty, &out).unwrap_err();
    assert!(
        matches!(err, BackboneError::InvalidOnnx { .. }) && err.to_string().contains("holds no graph"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"definitely not protobuf").unwrap();
    let err = import_weights(Preset::TinyResNet, &garbage, &out).unwrap_err();
    assert!(matches!(err, BackboneError::InvalidOnnx { .. }), "{err}");

    let bytes = std::fs::read(fixture("tiny_resnet.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_weights(Preset::TinyResNet, &truncated, &out).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::InvalidOnnx { .. } | BackboneError::Codegen { .. }
        ),
        "{err}"
    );

    // A weights file imported for one preset does not load as another.
    let vit = imported(Preset::TinyVit, dir.path());
    let err = ImageBackbone::load(Preset::TinyResNet, &vit, &Device::flex()).unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::WrongModel {
                expected: "tiny-resnet",
                ..
            }
        ),
        "{err}"
    );
}

/// The committed key maps of the reduced image families are what `vprompt-codegen keymap` derives
/// from their exports (the committed fixtures `tiny_resnet50.onnx`, `tiny_resnext.onnx`,
/// `tiny_bit.onnx`) and the native checkpoints saved with them (`fixtures/native/`).
#[test]
fn committed_key_maps_are_what_the_derivation_finds() {
    quiet();
    for (preset, source, checkpoint, ignore) in [
        (
            Preset::TinyResNet50,
            "torchvision-resnet50",
            "resnet50.pth",
            &["*.num_batches_tracked"][..],
        ),
        (
            Preset::TinyResNeXt,
            "torchvision-resnext",
            "resnext101_32x8d.pth",
            &["*.num_batches_tracked"][..],
        ),
        (Preset::TinyBit, "timm-bit", "model.safetensors", &[][..]),
    ] {
        let committed = vprompt_backbone::checkpoint::key_maps(preset).remove(0);
        let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
        let (derived, worst) = import::derive_key_map(
            Some(preset),
            &committed.source,
            &fixture(&format!("{}.onnx", preset.export_name())),
            &fixture(&format!("native/{source}/{checkpoint}")),
            &ignore,
        )
        .unwrap();
        assert!(worst < 1e-6, "{preset}: {worst}");
        assert_eq!(derived, committed, "{preset}: the committed key map is stale");
    }
}
