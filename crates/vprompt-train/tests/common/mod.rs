//! Shared by the training tests: the tiny ResNet fixture backbone (its committed weights, the
//! import of its committed ONNX: `vprompt-codegen/tests/import.rs` checks that) and the committed
//! Fashion-MNIST subset prepared at its 32 x 32 input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use vprompt_backbone::{ImageBackbone, Preset};
use vprompt_data::{PreparedDataset, Preprocess, fashion_mnist, prepare};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny ResNet with its committed weights.
pub fn tiny_resnet(device: &Device) -> ImageBackbone {
    let path = workspace().join("crates/vprompt-backbone/tests/fixtures/tiny_resnet.bpk");
    ImageBackbone::load(Preset::TinyResNet, path, device).unwrap()
}

/// (train, validation, test) of the Fashion-MNIST subset at 32 x 32: 900 / 100 / 1000 images.
pub fn fmnist_32() -> (Arc<PreparedDataset>, Arc<PreparedDataset>, Arc<PreparedDataset>) {
    let splits = fashion_mnist(workspace().join("tests/fixtures/fashion-mnist")).unwrap();
    let (train, valid) = splits.train.split_validation(0.1, 42).unwrap();
    let p = Preprocess::stretch([32, 32]);
    (
        Arc::new(prepare(&train, &p).unwrap()),
        Arc::new(prepare(&valid, &p).unwrap()),
        Arc::new(prepare(&splits.test, &p).unwrap()),
    )
}

/// The first `n` images of `data`.
pub fn subset(data: &Arc<PreparedDataset>, n: usize) -> Arc<PreparedDataset> {
    let bytes = data.image_bytes();
    Arc::new(PreparedDataset {
        source: format!("{} (first {n})", data.source),
        size: data.size,
        channels: data.channels,
        pixels: data.pixels[..n * bytes].to_vec(),
        labels: data.labels[..n].to_vec(),
        classes: data.classes.clone(),
    })
}

/// Whether resuming on `device` is bit-exact: on flex every kernel is deterministic, so a resumed
/// run must end with exactly the bits of an uninterrupted one.
pub fn bit_exact(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    let _ = device;
    false
}

/// How far a resumed run may end from an uninterrupted one off flex, relative to the largest
/// value compared (docs/backends.md): the GPU backends' kernels (autotuned, fused) may order a sum
/// differently once a run restarts, which changes the last bits and then compounds over the steps.
pub const RESUME_TOLERANCE: f64 = 1e-4;

/// Resumed against uninterrupted values: bit-identical where [`bit_exact`], else within
/// [`RESUME_TOLERANCE`] of the largest expected magnitude.
#[track_caller]
pub fn assert_resumed(got: &[f64], expected: &[f64], device: &Device, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    if bit_exact(device) {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(got) == bits(expected), "{what}: the resumed run differs");
        return;
    }
    let scale = expected
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let worst = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    eprintln!(
        "{what}: resumed vs uninterrupted, largest difference {:.2e} relative",
        worst / scale
    );
    assert!(
        worst <= RESUME_TOLERANCE * scale,
        "{what}: resumed differs by {worst:e}, more than {RESUME_TOLERANCE:e} x {scale:e}"
    );
}

/// `f32` values as `f64`, for [`assert_resumed`].
pub fn wide(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// SPSA-GC with `draws` draws per step and the settings the fixture's tests use (`a = c = 0.01`;
/// the reference's `ZerothOrderConfig::spsa_gc()` has `a = 40, c = 0.001`).
#[allow(dead_code)] // for the black-box tests
pub fn spsa_gc_drawing(draws: usize) -> vprompt_train::ZerothOrderConfig {
    vprompt_train::ZerothOrderConfig::SpsaGc {
        draws,
        a: 0.01,
        c: 0.01,
        o: 0.0,
        alpha: 0.6,
        gamma: 0.1,
        momentum: 0.9,
    }
}
