//! Quickstart: teach a frozen ImageNet model (the embedded EfficientNet-Lite0) to classify
//! Fashion-MNIST by learning only a 30-pixel frame around its input (the paper's padding prompt),
//! offline, on the CPU.
//!
//! Run: `cargo run --release --example quickstart` (a few minutes on 2 cores after the build).
//! Writes `runs/quickstart/`: the prompt as PNG, loss and accuracy curves, metrics, checkpoints.

use std::sync::Arc;

use vprompt::data::{Preprocess, fashion_mnist, prepare};
use vprompt::prelude::*;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let run_dir = "runs/quickstart";
    let _ = std::fs::remove_dir_all(run_dir); // a fresh run each time (a kept dir would resume)
    let device = vprompt::device_from_args(std::env::args().skip(1))?.device;

    // The committed Fashion-MNIST subset (100 images per class for train and test): 450 images to
    // train on, 50 to select on, 200 to test on, upsampled once to the model's 224 x 224.
    let splits = fashion_mnist(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fashion-mnist"
    ))?;
    let train = splits.train.few_shot(50, 0)?;
    let (train, valid) = train.split_validation(0.1, 0)?;
    let test = splits.test.few_shot(20, 0)?;
    let backbone = ImageBackbone::efficientnet_lite0(&device)?;
    let preprocess = Preprocess::stretch(backbone.input_size());
    let [train, valid, test] = [&train, &valid, &test].map(|d| prepare(d, &preprocess).map(Arc::new));
    let (train, valid, test) = (train?, valid?, test?);

    // The paper's prompt (a frame of width 30: 69,840 learned values) and mapping (class i <- ImageNet
    // class i); a short Adam schedule instead of the paper's 1000 epochs.
    let prompt = PaddingPromptConfig::new(30)
        .with_init(PromptInit::Zeros)
        .init(backbone.input_size(), &device)?;
    println!("prompt: {} learned values", prompt.num_params());
    let mapping = LabelMappingConfig::FirstN.init(backbone.output_dim(), train.classes.len(), &device)?;
    let classifier = PromptedClassifier::new(prompt.into(), backbone, mapping)?;
    let config = TrainingConfig::ilm_vp()
        .with_epochs(2)
        .with_learning_rate(0.1)
        .with_schedule(ScheduleConfig::CosinePerStep)
        .with_batch_size(32)
        .with_log_every(5);
    let trained = Trainer::new(config, &device)
        .with_run_dir(run_dir)
        .with_observer(std::sync::Arc::new(vprompt::run::curves::Curves)) // loss.png, accuracy.png
        .train(classifier, train, valid)?;

    let report = trained.evaluate(test, 50)?;
    println!("{report}");
    println!(
        "test top-1: unprompted {:.1}% -> prompted {:.1}%",
        100.0 * report.unprompted.top1,
        100.0 * report.prompted.top1
    );
    let scale = trained.prompt().save_png(format!("{run_dir}/prompt.png"))?;
    println!("wrote {run_dir}/prompt.png (grey = 0, black/white = -/+{scale:.2}), loss.png, accuracy.png");
    Ok(())
}
