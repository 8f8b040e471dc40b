//! The paper's recipe (padding prompt p = 30, SGD lr 40, momentum 0.9, 1000-iteration warmup and
//! cosine decay, first-N mapping) on the full Fashion-MNIST from Debian's `dataset-fashion-mnist`
//! (60,000 train, 10,000 test), with the embedded EfficientNet-Lite0.
//!
//! Run: `cargo run --release --example paper_fashion_mnist -- [EPOCHS] [RUN_DIR] [--device NAME]`
//! (default 1000 epochs as in the paper: a GPU job, `--features cuda` and `--device cuda`; on a
//! CPU try 1). Interrupt it
//! and run the same command again: it resumes from the last checkpoint.

use std::sync::Arc;

use vprompt::data::{Preprocess, fashion_mnist, prepare_cached};
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let epochs: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let run_dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "runs/paper-fashion-mnist".into());
    let backbone = ImageBackbone::efficientnet_lite0(&device)?;
    let splits = fashion_mnist("/usr/share/datasets/fashion-mnist")?;
    let (train, valid) = splits.train.split_validation(0.1, 0)?;
    let p = Preprocess::stretch(backbone.input_size());
    let cache = format!("{run_dir}/../.vprompt-cache"); // 224 x 224 grey: ~3.5 GB, made once
    let [train, valid, test] =
        [&train, &valid, &splits.test].map(|d| prepare_cached(d, &p, &cache).map(|(d, _)| Arc::new(d)));
    let (train, valid, test) = (train?, valid?, test?);
    let prompt = PaddingPromptConfig::new(30).init(backbone.input_size(), &device)?;
    let mapping = LabelMappingConfig::FirstN.init(1000, 10, &device)?;
    let classifier = PromptedClassifier::new(prompt.into(), backbone, mapping)?;
    let config = TrainingConfig::paper().with_epochs(epochs);
    let trained = Trainer::new(config, &device)
        .with_run_dir(&run_dir)
        .train(classifier, train, valid)?;
    println!("{}", trained.evaluate(test, 256)?);
    trained.prompt().save_png(format!("{run_dir}/prompt.png"))?;
    Ok(())
}
