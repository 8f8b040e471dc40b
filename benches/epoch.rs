//! Whole-pipeline throughput on EfficientNet-Lite0 with real data (the committed Fashion-MNIST
//! subset, upsampled once to 224 x 224), on every compiled backend:
//! - **evaluation**: prompted top-1 over 250 test images (batching, forward, readback), batch 32;
//! - **a training epoch** of the paper's recipe (padding prompt p = 30, SGD lr 40 with warm-up,
//!   first-N mapping) over 250 training images at batch 32, through `Trainer`: shuffling, batching
//!   with prefetch, the steps, and the selection pass over 20 validation images. Preparation
//!   (decode + resize) is done once before, as a real run does it once and caches it.
//!
//! images/s counts the images the call processes (evaluation: 250; epoch: 250 trained + 20
//! validated). Compare with `scripts/torch_vp_epoch.py`, the same epoch in PyTorch with the usual
//! per-epoch `torchvision` transforms.
//!
//! Run: `cargo bench --bench epoch` (`--features wgpu` / `cuda` / `cpu` for other backends).

use std::sync::Arc;

use vprompt::data::{BatchLoader, Preprocess, fashion_mnist, prepare};
use vprompt::prelude::*;
use vprompt::train::evaluate;
use vprompt_examples::bench::{measure, print_table};
use vprompt_examples::bench_devices;

const BATCH: usize = 32;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let splits = fashion_mnist(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fashion-mnist"
    ))?;
    let (train, valid) = splits.train.split_validation(0.1, 0)?;
    let [train, valid, test] = [
        train.few_shot(25, 0)?,
        valid.few_shot(2, 0)?,
        splits.test.few_shot(25, 0)?,
    ];
    let preprocess = Preprocess::stretch([224, 224]);
    let [train, valid, test] = [&train, &valid, &test].map(|d| prepare(d, &preprocess).map(Arc::new));
    let (train, valid, test) = (train?, valid?, test?);

    let mut rows = Vec::new();
    for (backend, device) in bench_devices()? {
        let classifier = || -> anyhow::Result<PromptedClassifier<ImageBackbone>> {
            let backbone = ImageBackbone::efficientnet_lite0(&device)?;
            let mapping = LabelMappingConfig::FirstN.init(backbone.output_dim(), 10, &device)?;
            let prompt = PaddingPromptConfig::new(30).init(backbone.input_size(), &device)?;
            Ok(PromptedClassifier::new(prompt.into(), backbone, mapping)?)
        };

        let model = classifier()?;
        let loader = BatchLoader::new(test.clone(), BATCH)?;
        rows.push(measure(
            &format!("evaluate lite0 prompted, {} images, batch {BATCH}", test.len()),
            &backend,
            test.len(),
            &device,
            || {
                std::hint::black_box(evaluate(&model, &loader, &device, true).expect("evaluates"));
            },
        ));

        let config = TrainingConfig::paper().with_epochs(1).with_batch_size(BATCH);
        rows.push(measure(
            &format!(
                "training epoch lite0 (paper recipe), {} + {} validation images, batch {BATCH}",
                train.len(),
                valid.len()
            ),
            &backend,
            train.len() + valid.len(),
            &device,
            || {
                let trainer = Trainer::new(config.clone(), &device).quiet(true);
                let model = classifier().expect("builds");
                std::hint::black_box(
                    trainer
                        .train(model, train.clone(), valid.clone())
                        .expect("trains"),
                );
            },
        ));
    }
    print_table(&rows);
    Ok(())
}
