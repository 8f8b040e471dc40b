//! White-box vs black-box prompting of the same frozen model on the same task (paper section 2.3:
//! adapting a model one can only query). White-box training backpropagates through the model;
//! black-box training only sends images and reads scores back, estimating the gradient from loss
//! differences (RGF and SPSA-GC), and pays for it in queries.
//!
//! The model is the tiny ResNet fixture (a narrow ResNet pretrained on digits, 32 x 32; its ONNX
//! and its weights file are committed) so the comparison runs in minutes on 2 cores. Two tasks on the committed
//! Fashion-MNIST subset:
//! - `shift` (default): a domain shift with a known cure. The images dimmed to 0.7, labelled with
//!   the model's own predictions, then brightened by 0.3; the prompt -0.3 restores them exactly.
//! - `fashion`: Fashion-MNIST's own labels through the first-10 label mapping, the paper's
//!   cross-domain setting.
//!
//! Prints validation accuracy against queries (white-box: one forward and backward pass per image
//! counts as one) and test accuracy of each, and writes `runs/black_box/<task>/accuracy-vs-queries.png`.
//!
//! Run: `cargo run --release --example black_box -- [EPOCHS] [shift|fashion]` (default 5 shift).

use std::path::Path;
use std::sync::Arc;

use vprompt::data::{BatchLoader, PreparedDataset, Preprocess, fashion_mnist, prepare};
use vprompt::prelude::*;
use vprompt::run::curves::{Axis, Series, line_plot};
use vprompt::train::BlackBoxTrained;

fn main() -> anyhow::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let vprompt::DeviceArgs { device, args, .. } = vprompt::device_from_args(std::env::args().skip(1))?;
    let epochs: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let task = args.get(1).cloned().unwrap_or_else(|| "shift".into());
    anyhow::ensure!(
        task == "shift" || task == "fashion",
        "the task is `shift` or `fashion`, not `{task}`"
    );
    let out_dir = format!("runs/black_box/{task}");
    let out = Path::new(&out_dir);
    let _ = std::fs::remove_dir_all(out); // a fresh run each time (a kept dir would resume)
    std::fs::create_dir_all(out)?;
    let root = env!("CARGO_MANIFEST_DIR");
    let weights = Path::new(root).join("crates/vprompt-backbone/tests/fixtures/tiny_resnet.bpk");
    let backbone = || ImageBackbone::load(Preset::TinyResNet, &weights, &device);

    let splits = fashion_mnist(Path::new(root).join("tests/fixtures/fashion-mnist"))?;
    let (train, valid) = splits.train.split_validation(0.1, 42)?;
    let p = Preprocess::stretch([32, 32]);
    let [train, valid, test] = [&train, &valid, &splits.test].map(|d| prepare(d, &p).map(Arc::new));
    let (train, valid, test) = (train?, valid?, test?);
    let mapping = || LabelMappingConfig::FirstN.init(10, 10, &device);
    let (train, valid, test) = if task == "shift" {
        let mut labeller = LocalModel::new(backbone()?, mapping()?)?;
        let mut shift = |d: Arc<PreparedDataset>| shift_task(&d, &mut labeller, &device).map(Arc::new);
        (shift(train)?, shift(valid)?, shift(test)?)
    } else {
        (train, valid, test)
    };
    // One prompt for both: a full-image perturbation of [0, 1] pixels, clamped, starting at zero.
    let prompt = FullImagePromptConfig::new()
        .with_init(PromptInit::Zeros)
        .with_space(PromptSpace::Pixel { clamp: true });
    let batch = 8;

    // White box: Adam through the frozen model.
    let classifier =
        PromptedClassifier::new(prompt.init([32, 32], &device)?.into(), backbone()?, mapping()?)?;
    let white_config = TrainingConfig::ilm_vp()
        .with_epochs(epochs)
        .with_learning_rate(0.05)
        .with_schedule(ScheduleConfig::CosinePerStep)
        .with_batch_size(batch)
        .with_log_every(0);
    let white =
        Trainer::new(white_config, &device)
            .quiet(true)
            .train(classifier, train.clone(), valid.clone())?;
    let white_report = white.evaluate(test.clone(), 100)?;
    let white_points: Vec<(f64, f64)> = white
        .history
        .iter()
        .map(|r| ((r.epoch * train.len()) as f64, r.valid_top1.unwrap_or(f64::NAN)))
        .collect();

    // Black box: the same model behind `BlackBoxModel`, queried only.
    let mut series = vec![Series {
        name: "white-box (Adam)".into(),
        points: white_points.clone(),
    }];
    let mut rows = Vec::new();
    for optimizer in [
        ZerothOrderConfig::SpsaGc {
            draws: 5,
            a: 0.01,
            c: 0.01,
            o: 0.0,
            alpha: 0.6,
            gamma: 0.1,
            momentum: 0.9,
        },
        ZerothOrderConfig::Rgf {
            directions: 5,
            smoothing: 0.01,
            learning_rate: 0.02,
            learning_rate_min: 0.0002,
        },
    ] {
        let mut model = LocalModel::new(backbone()?, mapping()?)?;
        let name = optimizer.name();
        let config = BlackBoxConfig::new(epochs, optimizer)
            .with_batch_size(batch)
            .with_log_every(0);
        let trained = BlackBoxTrainer::new(config, &device)
            .with_run_dir(out.join(name))
            .train(
                &mut model,
                prompt.init([32, 32], &device)?.into(),
                train.clone(),
                valid.clone(),
            )?;
        let report = trained.evaluate(&mut model, test.clone(), 100)?;
        series.push(Series {
            name: format!("black-box ({name})"),
            points: points(&trained),
        });
        rows.push((name, report));
    }
    line_plot(
        &out.join("accuracy-vs-queries.png"),
        "White box against black box",
        &Axis::log("images sent to the model (training)"),
        &Axis::linear("validation top-1"),
        &series,
    )?;

    println!("validation top-1 against queries (images sent to the model during training)");
    println!(
        "| epoch | white-box images | white-box top-1 | {} |",
        rows.iter()
            .map(|(n, _)| format!("{n} queries | {n} top-1"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (k, (images, top1)) in white_points.iter().enumerate() {
        let mut line = format!("| {} | {images} | {:.1}% |", k + 1, 100.0 * top1);
        for s in &series[1..] {
            if let Some((q, a)) = s.points.get(k) {
                line += &format!(" {q} | {:.1}% |", 100.0 * a);
            }
        }
        println!("{line}");
    }
    println!("\ntest top-1 ({} images)", test.len());
    println!("unprompted: {:.1}%", 100.0 * white_report.unprompted.top1);
    println!("white-box:  {:.1}%", 100.0 * white_report.prompted.top1);
    for (name, r) in &rows {
        println!(
            "{name:<11} {:.1}% after {} training queries (+{} validation, +{} test)",
            100.0 * r.prompted.top1,
            r.training_queries,
            r.validation_queries,
            r.evaluation_queries
        );
    }
    println!("wrote {}", out.join("accuracy-vs-queries.png").display());
    Ok(())
}

/// The `shift` task on `data`: dimmed images labelled by the model's top-1, then brightened
/// (`vprompt_testkit::shift_domain`).
fn shift_task(
    data: &PreparedDataset,
    model: &mut impl BlackBoxModel,
    device: &Device,
) -> anyhow::Result<PreparedDataset> {
    let (clean, shifted) = vprompt_testkit::shift_domain(&data.pixels);
    let clean = Arc::new(PreparedDataset {
        pixels: clean,
        ..data.clone()
    });
    let mut labels = Vec::with_capacity(data.len());
    for batch in BatchLoader::new(clean, 100)?.epoch(0, 0, device) {
        let scores = model.query(batch.images).map_err(|e| anyhow::anyhow!(e))?;
        labels.extend(
            scores
                .chunks(10)
                .map(|row| (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b })),
        );
    }
    Ok(PreparedDataset {
        source: format!("{} (dimmed, labelled by the model, brightened)", data.source),
        pixels: shifted,
        labels,
        ..data.clone()
    })
}

/// (training queries, validation top-1) per epoch.
fn points(trained: &BlackBoxTrained) -> Vec<(f64, f64)> {
    trained
        .history
        .iter()
        .filter_map(|r| Some((r.queries? as f64, r.valid_top1?)))
        .collect()
}
