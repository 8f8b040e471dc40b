//! Few-shot: visual prompting against a linear probe for N in {1, 2, 4, 8, 16} images per class
//! (paper figure 9), on the embedded EfficientNet-Lite0 and the committed Fashion-MNIST subset.
//!
//! Run: `cargo run --release --example few_shot -- [EPOCHS]` (default 2; a few minutes on 2 cores).

use std::sync::Arc;

use vprompt::data::{Preprocess, fashion_mnist, prepare};
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let epochs: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let splits = fashion_mnist(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fashion-mnist"
    ))?;
    let (pool, valid) = splits.train.split_validation(0.1, 0)?;
    let p = Preprocess::stretch([224, 224]);
    let valid = Arc::new(prepare(&valid, &p)?);
    let test = Arc::new(prepare(&splits.test.few_shot(20, 0)?, &p)?);
    println!("| shots | unprompted | visual prompt | linear probe |\n|---:|---:|---:|---:|");
    for shots in [1, 2, 4, 8, 16] {
        let train = Arc::new(prepare(&pool.few_shot(shots, 0)?, &p)?);
        let backbone = ImageBackbone::efficientnet_lite0(&device)?;
        let probe = LinearProbeConfig::new()
            .fit(&backbone, &train, &valid, &device)?
            .evaluate(&backbone, &test, &device)?;
        let classifier = PromptedClassifier::new(
            PaddingPromptConfig::new(30)
                .with_init(PromptInit::Zeros)
                .init([224, 224], &device)?
                .into(),
            backbone,
            LabelMappingConfig::FirstN.init(1000, 10, &device)?,
        )?;
        let config = TrainingConfig::ilm_vp()
            .with_epochs(epochs)
            .with_learning_rate(0.1)
            .with_batch_size(16)
            .with_log_every(0);
        let report = Trainer::new(config, &device)
            .quiet(true)
            .train(classifier, train, valid.clone())?
            .evaluate(test.clone(), 50)?;
        println!(
            "| {shots} | {:.1}% | {:.1}% | {:.1}% |",
            100.0 * report.unprompted.top1,
            100.0 * report.prompted.top1,
            100.0 * probe.top1
        );
    }
    Ok(())
}
