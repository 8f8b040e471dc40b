//! Shared by the training tests: the tiny ResNet fixture backbone (imported from its committed
//! ONNX) and the committed Fashion-MNIST subset prepared at its 32 x 32 input.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::prelude::*;
use vprompt_backbone::{ImageBackbone, Preset};
use vprompt_data::{PreparedDataset, Preprocess, fashion_mnist, prepare};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny ResNet's weights, imported once per test binary.
pub fn tiny_resnet(device: &Device) -> ImageBackbone {
    static WEIGHTS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = WEIGHTS.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny-resnet.bpk");
        let onnx = workspace().join("crates/vprompt-backbone/tests/fixtures/tiny_resnet.onnx");
        vprompt_backbone::import::import_weights(Preset::TinyResNet, &onnx, &path).unwrap();
        (dir, path)
    });
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
