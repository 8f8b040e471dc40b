//! The same padding prompt with each label mapping (first-N, random, frequency, iterative,
//! Bayesian, Bayesian+) on the embedded EfficientNet-Lite0 and a 20-shot Fashion-MNIST subset:
//! unprompted and prompted test top-1 per mapping (each mapping fitted on the training data only).
//!
//! Run: `cargo run --release --example compare_mappings -- [EPOCHS]` (default 1; ~1 min per mapping
//! on 2 cores).

use std::sync::Arc;

use vprompt::data::{Preprocess, fashion_mnist, prepare};
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let epochs: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let splits = fashion_mnist(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fashion-mnist"
    ))?;
    let (train, valid) = splits.train.few_shot(20, 0)?.split_validation(0.2, 0)?;
    let p = Preprocess::stretch([224, 224]);
    let [train, valid, test] =
        [&train, &valid, &splits.test.few_shot(10, 0)?].map(|d| prepare(d, &p).map(Arc::new));
    let (train, valid, test) = (train?, valid?, test?);
    println!("| mapping | unprompted top-1 | prompted top-1 |\n|---|---:|---:|");
    for mapping in [
        LabelMappingConfig::FirstN,
        LabelMappingConfig::Random { seed: 0 },
        LabelMappingConfig::Frequency,
        LabelMappingConfig::ILM,
        LabelMappingConfig::BLM,
        LabelMappingConfig::BLM_PLUS,
    ] {
        let backbone = ImageBackbone::efficientnet_lite0(&device)?;
        let initial = if mapping.needs_fit() {
            LabelMappingConfig::FirstN
        } else {
            mapping.clone()
        };
        let classifier = PromptedClassifier::new(
            PaddingPromptConfig::new(30)
                .with_init(PromptInit::Zeros)
                .init([224, 224], &device)?
                .into(),
            backbone,
            initial.init(1000, 10, &device)?,
        )?;
        let config = TrainingConfig::ilm_vp()
            .with_epochs(epochs)
            .with_learning_rate(0.1)
            .with_batch_size(32)
            .with_log_every(0);
        let mut trainer = Trainer::new(config, &device).quiet(true);
        if mapping.needs_fit() {
            trainer = trainer.with_mapping(mapping.clone());
        }
        let report = trainer
            .train(classifier, train.clone(), valid.clone())?
            .evaluate(test.clone(), 50)?;
        println!(
            "| {} | {:.1}% | {:.1}% |",
            mapping.method(),
            100.0 * report.unprompted.top1,
            100.0 * report.prompted.top1
        );
    }
    Ok(())
}
