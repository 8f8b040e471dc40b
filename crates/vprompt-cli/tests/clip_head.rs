//! The CLIP text-prompt head on the tiny CLIP-style text tower (a random-weight fixture of the CLIP
//! family, imported from ONNX here): vprompt's tokenizer, the frozen encoder and the template
//! average give the class embeddings and logits a numpy + onnxruntime computation gives
//! (`crates/vprompt-mapping/tests/reference/make_reference.py`).
//!
//! Here rather than beside the examples because it imports ONNX: burn-onnx's `import` feature turns
//! on Burn's `flex`, which the examples' and benches' own dependencies must not, so that
//! `scripts/check-backends.sh` checks them without it.

use vprompt::backbone::import::import_weights;
use vprompt::mapping::{OutputMapping, clip_head};
use vprompt::prelude::*;
use vprompt_testkit::{assert_close, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!(
        "{}/../vprompt-mapping/tests/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

#[test]
fn text_prompt_head_matches_numpy() {
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("text.bpk");
    let onnx = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vprompt-backbone/tests/fixtures/tiny_clip_text.onnx"
    );
    import_weights(Preset::TinyClipText, onnx.as_ref(), &weights).unwrap();
    let device = Device::flex();
    let encoder = TextEncoder::load(Preset::TinyClipText, &weights, &device).unwrap();

    let classes = ["T-shirt/top", "Ankle_boot", "cat"].map(String::from);
    let templates = ["This is a photo of a {}", "a blurry photo of the {}."].map(String::from);
    let mut calls = 0;
    let head = clip_head(&classes, &templates, 4, &device, |tokens| {
        calls += 1;
        encoder.forward(tokens)
    })
    .unwrap();
    assert_eq!(
        calls, 2,
        "6 texts in batches of 4: the encoder runs twice, once per text"
    );
    assert_eq!((head.source_dim(), head.num_classes()), (16, 3));

    // W is the transposed class embeddings.
    let w = head.matrix();
    let expected = reference("clip_head_class_embeddings.npy").to_f32();
    let transposed: Vec<f32> = (0..16)
        .flat_map(|d| (0..3).map(move |c| (c, d)))
        .map(|(c, d)| expected[c * 16 + d])
        .collect();
    assert_close(&w, &transposed, 1e-5, 1e-4);

    let images = reference("clip_head_images.npy");
    let images = Tensor::<2>::from_data(TensorData::new(images.to_f32(), [5, 16]), &device);
    let logits = to_vec(head.forward(images).unwrap());
    assert_close(&logits, &reference("clip_head_logits.npy").to_f32(), 1e-3, 1e-4);
}
