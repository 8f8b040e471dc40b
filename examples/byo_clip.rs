//! Bring your own CLIP: the paper's CLIP setting (TP + VP). The text tower turns "This is a photo of a
//! {class}" into class embeddings once; a padding prompt is trained in front of the frozen image
//! tower; test accuracy is printed without the prompt (the text-prompt baseline) and with it.
//!
//! The weights are the checkpoint as transformers or open_clip publish it, given twice (image and
//! text tower), e.g. `openai/clip-vit-base-patch32`'s `model.safetensors` downloaded with
//! `huggingface-cli download openai/clip-vit-base-patch32 model.safetensors`:
//! ```text
//! cargo run --release --example byo_clip -- model.safetensors model.safetensors
//! cargo run --release --example byo_clip --features hub -- hf:openai/clip-vit-base-patch32 hf:openai/clip-vit-base-patch32
//! ```
//! (`.bpk` files from `vprompt import` work too; so do the reduced CLIP fixtures: add
//! `tiny-vit tiny-clip-text` after the two files, e.g.
//! `crates/vprompt-backbone/tests/fixtures/native/open-clip/open_clip_pytorch_model.bin`.)

use std::sync::Arc;

use anyhow::Context;
use vprompt::data::{Preprocess, fashion_mnist, prepare};
use vprompt::mapping::{PAPER_TEMPLATE, clip_head};
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let (image_weights, text_weights) = (
        args.first()
            .context("usage: byo_clip IMAGE_WEIGHTS TEXT_WEIGHTS [IMAGE_PRESET TEXT_PRESET]")?,
        args.get(1)
            .context("usage: byo_clip IMAGE_WEIGHTS TEXT_WEIGHTS [IMAGE_PRESET TEXT_PRESET]")?,
    );
    let image_preset: Preset = args.get(2).map_or("clip-vit-b32-image", String::as_str).parse()?;
    let text_preset: Preset = args.get(3).map_or("clip-vit-b32-text", String::as_str).parse()?;
    let image = ImageBackbone::load(image_preset, image_weights, &device)?;
    let text = TextEncoder::load(text_preset, text_weights, &device)?;

    let splits = fashion_mnist(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fashion-mnist"
    ))?;
    let (train, valid) = splits.train.split_validation(0.1, 0)?;
    let p = Preprocess::stretch(image.input_size());
    let [train, valid, test] = [&train, &valid, &splits.test].map(|d| prepare(d, &p).map(Arc::new));
    let (train, valid, test) = (train?, valid?, test?);

    // Zero-shot logits are `scale * cos`, with the checkpoint's own logit scale.
    let head = clip_head(&train.classes, &[PAPER_TEMPLATE.to_string()], 32, &device, |t| {
        text.forward(t)
    })?
    .with_scale(text.logit_scale())?;
    let prompt = PaddingPromptConfig::new(30.min((image.input_size()[0] - 1) / 2))
        .init(image.input_size(), &device)?;
    let classifier = PromptedClassifier::new(prompt.into(), image, head)?;
    let config = TrainingConfig::paper()
        .with_epochs(2)
        .with_batch_size(32)
        .with_schedule(ScheduleConfig::CosinePerStep);
    let trained = Trainer::new(config, &device)
        .with_run_dir("runs/byo-clip")
        .train(classifier, train, valid)?;
    let report = trained.evaluate(test, 64)?;
    println!(
        "test top-1: text prompt only {:.1}% -> text + visual prompt {:.1}%",
        100.0 * report.unprompted.top1,
        100.0 * report.prompted.top1
    );
    Ok(())
}
