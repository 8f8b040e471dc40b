//! The full-size presets (whose weights users bring) build and run a forward pass, here with random
//! weights: the committed architecture code compiles, takes 224 x 224 images (77 tokens for the
//! text tower) and returns outputs of the documented sizes.

use burn::prelude::*;
use vprompt_backbone::*;

#[test]
fn image_presets_run_with_random_weights() {
    let device = Device::flex();
    for preset in [
        Preset::ResNet18,
        Preset::ResNet50,
        Preset::ResNeXt101_32x8d,
        Preset::BitMR50x1,
        Preset::ClipVitB32Image,
    ] {
        let backbone = ImageBackbone::with_random_weights(preset, 0, 0.02, &device).unwrap();
        let pixels = Tensor::<4>::random([1, 3, 224, 224], burn::tensor::Distribution::Default, &device);
        let (features, output) = backbone.forward_features(backbone.normalize(pixels)).unwrap();
        assert_eq!(features.dims(), [1, preset.feature_dim()], "{preset}");
        assert_eq!(output.dims(), [1, preset.output_dim()], "{preset}");
        let values = vprompt_testkit::to_vec(output);
        assert!(values.iter().all(|v| v.is_finite()), "{preset}");
        assert!(
            values.iter().any(|v| *v != 0.0),
            "{preset}: random weights must give a non-zero output"
        );
    }
}

#[test]
fn clip_text_tower_runs_with_random_weights() {
    let device = Device::flex();
    let encoder = TextEncoder::with_random_weights(Preset::ClipVitB32Text, 0, 0.02, &device).unwrap();
    assert_eq!((encoder.context_length(), encoder.output_dim()), (77, 512));
    // [start of text] "a photo" [end of text], zero-padded: CLIP reads the end-of-text position.
    let mut ids = vec![0i64; 2 * 77];
    ids[..4].copy_from_slice(&[49406, 320, 1125, 49407]);
    ids[77..80].copy_from_slice(&[49406, 320, 49407]);
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 77]), &device);
    let out = vprompt_testkit::to_vec(encoder.forward(tokens).unwrap());
    assert_eq!(out.len(), 2 * 512);
    assert!(out.iter().all(|v| v.is_finite()));
    assert_ne!(out[..512], out[512..], "different texts, different embeddings");
}
