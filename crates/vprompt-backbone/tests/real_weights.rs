//! Checks with real third-party weights, which cannot be shipped or downloaded here. Export and
//! import them as `docs/backbones.md` describes, then run, for example:
//!
//! ```sh
//! VPROMPT_WEIGHTS_DIR=/path/to/bpks cargo test --release -p vprompt-backbone --test real_weights -- --ignored
//! ```
//!
//! `VPROMPT_WEIGHTS_DIR` holds `resnet18.bpk`, `resnet50.bpk`, `resnext101-32x8d.bpk`, `clip-vit-b32-image.bpk` and
//! `clip-vit-b32-text.bpk` (as written by `vprompt import <preset> <onnx> <preset>.bpk`); a test
//! whose file is absent fails with the path it looked for.

use std::path::PathBuf;

use burn::prelude::*;
use vprompt_backbone::*;
use vprompt_testkit::{npy, to_vec};

fn weights(preset: Preset) -> PathBuf {
    let dir = std::env::var("VPROMPT_WEIGHTS_DIR").expect("set VPROMPT_WEIGHTS_DIR (see the file's doc)");
    PathBuf::from(dir).join(format!("{preset}.bpk"))
}

/// The committed photos (cat, espresso, rocket) as `[3, 3, 224, 224]` pixels in `[0, 1]`.
fn photos(device: &Device) -> Tensor<4> {
    let photos = npy::read(format!(
        "{}/tests/reference/lite0_photos_u8.npy",
        env!("CARGO_MANIFEST_DIR")
    ));
    Tensor::<4>::from_data(TensorData::new(photos.to_f32(), [3, 3, 224, 224]), device) / 255.0
}

fn top1(backbone: &ImageBackbone, pixels: Tensor<4>) -> Vec<String> {
    let logits = to_vec(backbone.forward(pixels).unwrap());
    let names = backbone.class_names().unwrap();
    logits
        .chunks(1000)
        .map(|row| names[(0..1000).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()].clone())
        .collect()
}

#[test]
#[ignore = "needs user-supplied ImageNet ResNet weights; see the file's doc"]
fn imagenet_resnets_recognise_the_photos() {
    let device = Device::flex();
    for preset in [Preset::ResNet18, Preset::ResNet50, Preset::ResNeXt101_32x8d] {
        let backbone = ImageBackbone::load(preset, weights(preset), &device).unwrap();
        let top = top1(&backbone, photos(&device));
        assert!(top[0].contains("cat"), "{preset}: {top:?}");
        assert_eq!(top[1], "espresso", "{preset}: {top:?}");
    }
}

#[test]
#[ignore = "needs user-supplied OpenAI CLIP ViT-B/32 weights; see the file's doc"]
fn clip_matches_the_cat_photo_to_the_cat_caption() {
    let device = Device::flex();
    let image =
        ImageBackbone::load(Preset::ClipVitB32Image, weights(Preset::ClipVitB32Image), &device).unwrap();
    let text = TextEncoder::load(Preset::ClipVitB32Text, weights(Preset::ClipVitB32Text), &device).unwrap();
    // open_clip's tokens for "This is a photo of a cat" and "This is a photo of a dog".
    let tokens = npy::read(format!(
        "{}/tests/fixtures/tiny_clip_text_input.npy",
        env!("CARGO_MANIFEST_DIR")
    ));
    let ids: Vec<i64> = tokens.values[..2 * 77].iter().map(|&v| v as i64).collect();
    let captions = text
        .forward(Tensor::from_data(TensorData::new(ids, [2, 77]), &device))
        .unwrap();
    let cat = image
        .forward(photos(&device).slice([0..1, 0..3, 0..224, 0..224]))
        .unwrap();
    let norm = |t: Tensor<2>| t.clone() / t.powi_scalar(2).sum_dim(1).sqrt();
    let similarity = to_vec(norm(cat).matmul(norm(captions).transpose()));
    assert!(
        similarity[0] > similarity[1],
        "cat {} vs dog {}",
        similarity[0],
        similarity[1]
    );
}
