//! The `vprompt` command-line tool: train, evaluate, apply and inspect visual prompts, run CLIP
//! zero-shot baselines, and import ONNX weights.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use burn::prelude::*;
use clap::{Parser, Subcommand};
use vprompt::backbone::{Backbone, ImageBackbone, Preset, TextEncoder};
use vprompt::data::{BatchLoader, Preprocess, decode_image, prepare};
use vprompt::experiment::ExperimentConfig;
use vprompt::mapping::{IMAGENET_TEMPLATES, OutputMapping, PAPER_TEMPLATE, clip_head};
use vprompt::prompt::{PaddingPromptConfig, Phase, Prompt, VisualPrompt};
use vprompt::run::{RunConfig, evaluate_run};
use vprompt::train::{PromptedClassifier, RunDir, evaluate};

#[derive(Parser)]
#[command(
    name = "vprompt",
    version,
    about = "Visual prompting: adapt a frozen vision model by learning only pixels"
)]
struct Cli {
    /// Backend: flex (CPU, default), cpu, wgpu or cuda (when compiled in).
    #[arg(long, global = true, default_value = "flex")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a prompt. Settings come from a TOML config (see `vprompt::run`), flags override it; the
    /// effective config is written to the run directory, and an interrupted run resumes.
    Train(TrainArgs),
    /// Evaluate a run's selected prompt on its test split, prompted and unprompted.
    Eval {
        /// The run directory.
        #[arg(long)]
        run: PathBuf,
    },
    /// Apply a run's selected prompt to images: writes the prompted images as PNG and prints the
    /// predicted class of each.
    Apply {
        /// The run directory.
        #[arg(long)]
        run: PathBuf,
        /// Where the prompted PNGs go.
        #[arg(long)]
        out: PathBuf,
        /// PNG or JPEG files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run an experiment: every dataset x backbone x seed x method of a TOML config (see
    /// `vprompt::experiment` and `experiments/`), writing `results.json` (every run), `results.md`
    /// (mean ± std per cell) and the config's plot. An interrupted experiment resumes.
    Experiment {
        /// The experiment config.
        config: PathBuf,
        /// A profile of the config, e.g. `small` (this CPU) or `full` (the paper's settings).
        #[arg(long)]
        profile: Option<String>,
        /// Output directory (default: `runs/experiments/<config name>[-<profile>]`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// CLIP zero-shot accuracy with text prompts (the paper's TP baseline) on a dataset's test split.
    ZeroShot(ZeroShotArgs),
    /// Convert an exported ONNX file into a preset's weights file, after checking that its graph is
    /// the preset's and that every tensor is present with the right shape.
    Import {
        /// The preset: efficientnet-lite0, resnet18, resnet50, resnext101-32x8d, clip-vit-b32-image,
        /// clip-vit-b32-text (or a tiny-* test fixture).
        preset: Preset,
        /// The ONNX file (from `scripts/export_onnx.py`).
        onnx: PathBuf,
        /// The weights file to write (`.bpk`).
        output: PathBuf,
    },
    /// Show a prompt: template, sizes, parameter count and value statistics (a `.bpk` prompt file, or
    /// a run directory's selected prompt).
    Inspect {
        /// A prompt file or a run directory.
        path: PathBuf,
        /// Also write the prompt as a PNG here.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// A TOML run config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory (checkpoints, metrics, curves).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Data format: fashion-mnist, mnist, cifar10, cifar100, folder, csv.
    #[arg(long)]
    data_format: Option<String>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Few-shot: N training images per class.
    #[arg(long)]
    few_shot: Option<usize>,
    /// Evaluate on N test images per class only.
    #[arg(long)]
    test_per_class: Option<usize>,
    /// Backbone preset.
    #[arg(long)]
    preset: Option<String>,
    /// Backbone weights file.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Prompt template as JSON, e.g. '{"Padding": {"pad": 30}}'.
    #[arg(long)]
    prompt: Option<String>,
    /// Label mapping as JSON, e.g. '"FirstN"' or '{"Iterative": {"every": 1}}'.
    #[arg(long)]
    mapping: Option<String>,
    /// Recipe: paper, ilm-vp, evp.
    #[arg(long)]
    recipe: Option<String>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// No per-step progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ZeroShotArgs {
    /// Image tower preset (clip-vit-b32-image, or tiny-vit).
    #[arg(long, default_value = "clip-vit-b32-image")]
    image_preset: Preset,
    /// Image tower weights.
    #[arg(long)]
    image_weights: PathBuf,
    /// Text tower preset (clip-vit-b32-text, or tiny-clip-text).
    #[arg(long, default_value = "clip-vit-b32-text")]
    text_preset: Preset,
    /// Text tower weights.
    #[arg(long)]
    text_weights: PathBuf,
    /// Data format (as for train).
    #[arg(long)]
    data_format: String,
    /// Data directory.
    #[arg(long)]
    data: PathBuf,
    /// Evaluate on N test images per class only.
    #[arg(long)]
    test_per_class: Option<usize>,
    /// Template with `{}` for the class name (default: the paper's "This is a photo of a {}").
    #[arg(long)]
    template: Option<String>,
    /// Average over OpenAI's 80 ImageNet templates instead.
    #[arg(long)]
    ensemble: bool,
}

fn main() -> ExitCode {
    // burn-onnx logs every graph node at DEBUG level unless a subscriber is already installed.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    vprompt::tune_allocator();
    let cli = Cli::parse();
    let result = device(&cli.device).and_then(|device| run(cli.command, &device));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn device(name: &str) -> anyhow::Result<Device> {
    Ok(match name {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "cpu")]
        "cpu" => Device::cpu(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => {
            bail!("backend `{other}` is not compiled into this vprompt (build with `--features {other}`)")
        }
    })
}

fn run(command: Command, device: &Device) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => train(args, device),
        Command::Eval { run } => {
            println!("{}", evaluate_run(&run, device)?);
            Ok(())
        }
        Command::Apply { run, out, images } => apply(&run, &out, &images, device),
        Command::ZeroShot(args) => zero_shot(args, device),
        Command::Experiment { config, profile, out } => experiment(&config, profile.as_deref(), out, device),
        Command::Import { preset, onnx, output } => {
            let report = vprompt::backbone::import::import_weights(preset, &onnx, &output)?;
            println!(
                "{}: wrote {} ({} tensors, {} values)",
                report.preset,
                report.output.display(),
                report.tensors,
                report.values
            );
            Ok(())
        }
        Command::Inspect { path, png } => inspect(&path, png.as_deref(), device),
    }
}

/// Reads the TOML config (if any) and applies the flags to it.
fn run_config(args: &TrainArgs) -> anyhow::Result<RunConfig> {
    let mut value: serde_json::Value = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let toml: toml::Value =
                toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
            serde_json::to_value(toml)?
        }
        None => serde_json::json!({}),
    };
    let set = |value: &mut serde_json::Value, path: &[&str], v: serde_json::Value| {
        let mut at = value;
        for key in &path[..path.len() - 1] {
            at = at
                .as_object_mut()
                .expect("config sections are tables")
                .entry(key.to_string())
                .or_insert_with(|| serde_json::json!({}));
        }
        at.as_object_mut()
            .expect("config sections are tables")
            .insert(path[path.len() - 1].to_string(), v);
    };
    let json = |s: &str, what: &str| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(s)
            .with_context(|| format!("--{what} must be JSON, e.g. '{{\"Padding\": {{\"pad\": 30}}}}'"))
    };
    if let Some(v) = &args.run_dir {
        set(&mut value, &["run_dir"], serde_json::json!(v));
    }
    if let Some(v) = &args.data_format {
        set(&mut value, &["data", "format"], serde_json::json!(v));
    }
    if let Some(v) = &args.data {
        set(&mut value, &["data", "path"], serde_json::json!(v));
    }
    if let Some(v) = args.few_shot {
        set(&mut value, &["data", "few_shot"], serde_json::json!(v));
    }
    if let Some(v) = args.test_per_class {
        set(&mut value, &["data", "test_per_class"], serde_json::json!(v));
    }
    if let Some(v) = &args.preset {
        set(&mut value, &["backbone", "preset"], serde_json::json!(v));
    }
    if let Some(v) = &args.weights {
        set(&mut value, &["backbone", "weights"], serde_json::json!(v));
    }
    if let Some(v) = &args.prompt {
        set(&mut value, &["prompt"], json(v, "prompt")?);
    }
    if let Some(v) = &args.mapping {
        set(&mut value, &["mapping"], json(v, "mapping")?);
    }
    if let Some(v) = &args.recipe {
        set(&mut value, &["training", "recipe"], serde_json::json!(v));
    }
    if let Some(v) = args.epochs {
        set(&mut value, &["training", "epochs"], serde_json::json!(v));
    }
    if let Some(v) = args.batch_size {
        set(&mut value, &["training", "batch_size"], serde_json::json!(v));
    }
    if let Some(v) = args.lr {
        set(&mut value, &["training", "learning_rate"], serde_json::json!(v));
    }
    if let Some(v) = args.seed {
        set(&mut value, &["training", "seed"], serde_json::json!(v));
    }
    serde_json::from_value(value)
        .context("invalid run config (it needs at least run_dir and [data] format and path)")
}

fn train(args: TrainArgs, device: &Device) -> anyhow::Result<()> {
    let config = run_config(&args)?;
    config.validate()?;
    eprintln!("training into {}", config.run_dir.display());
    let (trained, data) = config.train(device, args.quiet)?;
    if trained.interrupted {
        return Ok(());
    }
    let report = trained.evaluate(data.test, config.training.config()?.batch_size)?;
    println!("{report}");
    let png = config.run_dir.join("prompt.png");
    trained.prompt().save_png(&png)?;
    println!(
        "selected prompt: {}, {}",
        config.run_dir.join("best.json").display(),
        png.display()
    );
    Ok(())
}

/// The run's selected classifier.
fn load_run(dir: &Path, device: &Device) -> anyhow::Result<(RunConfig, PromptedClassifier<ImageBackbone>)> {
    let config = RunConfig::from_run_dir(dir)?;
    let (prompt, mapping) = RunDir::create(dir)?
        .load_best(device)?
        .with_context(|| format!("{} has no selected prompt yet", dir.display()))?;
    let mapping =
        mapping.with_context(|| format!("{} holds no mapping (a black-box run?)", dir.display()))?;
    let classifier = PromptedClassifier::new(prompt, config.backbone(device)?, mapping)?;
    Ok((config, classifier))
}

fn apply(dir: &Path, out: &Path, images: &[PathBuf], device: &Device) -> anyhow::Result<()> {
    let (_, classifier) = load_run(dir, device)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let classes = vprompt::run::class_names(dir).ok();
    let size = classifier.input_size();
    for path in images {
        let image = decode_image(path)?;
        let dataset = vprompt::data::Dataset {
            source: path.display().to_string(),
            images: vec![image],
            labels: vec![0],
            classes: vec!["?".into()],
            skipped: vec![],
        };
        let prepared = Arc::new(prepare(&dataset, &Preprocess::stretch(size))?);
        let batch = BatchLoader::new(prepared, 1)?
            .epoch(0, 0, device)
            .next()
            .expect("one image");
        let logits = classifier.forward(batch.images.clone(), Phase::Eval { batch: 0 })?;
        let probabilities = burn::tensor::activation::softmax(logits, 1)
            .into_data()
            .try_into_vec_as::<f32>()?;
        let best =
            (0..probabilities.len()).fold(0, |b, k| if probabilities[k] > probabilities[b] { k } else { b });
        let name = classes
            .as_ref()
            .and_then(|c| c.get(best).cloned())
            .unwrap_or_else(|| format!("class {best}"));
        // What the backbone sees, back in pixel units.
        let shown = classifier.prompted_pixels(batch.images, Phase::Eval { batch: 0 })?;
        let file = out.join(format!(
            "{}.png",
            path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        write_rgb(&shown, &file)?;
        println!(
            "{}: {name} ({:.1}%) -> {}",
            path.display(),
            100.0 * probabilities[best],
            file.display()
        );
    }
    Ok(())
}

fn write_rgb(image: &Tensor<4>, path: &Path) -> anyhow::Result<()> {
    let [_, _, h, w] = image.dims();
    let values = image
        .clone()
        .clamp(0.0, 1.0)
        .into_data()
        .try_into_vec_as::<f32>()?;
    let plane = h * w;
    let rgb: Vec<u8> = (0..plane)
        .flat_map(|k| (0..3).map(move |c| (c, k)))
        .map(|(c, k)| (values[c * plane + k] * 255.0).round() as u8)
        .collect();
    image::RgbImage::from_raw(w as u32, h as u32, rgb)
        .expect("sized buffer")
        .save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn experiment(
    path: &Path,
    profile: Option<&str>,
    out: Option<PathBuf>,
    device: &Device,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: ExperimentConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid experiment config", path.display()))?;
    let out = out.unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map_or("experiment".into(), |s| s.to_string_lossy().into_owned());
        let name = match profile {
            Some(p) => format!("{stem}-{p}"),
            None => stem,
        };
        Path::new("runs/experiments").join(name)
    });
    let results = config.run(profile, &out, device, |line| eprintln!("{line}"))?;
    println!("{}", vprompt::experiment::report(&results).0);
    println!("wrote {}", out.join("results.md").display());
    Ok(())
}

fn zero_shot(args: ZeroShotArgs, device: &Device) -> anyhow::Result<()> {
    let image = ImageBackbone::load(args.image_preset, &args.image_weights, device)?;
    let text = TextEncoder::load(args.text_preset, &args.text_weights, device)?;
    let mut config: RunConfig = serde_json::from_value(serde_json::json!({
        "run_dir": std::env::temp_dir().join("vprompt-zero-shot"),
        "data": { "format": args.data_format, "path": args.data },
        "backbone": { "preset": args.image_preset.name(), "weights": args.image_weights },
    }))?;
    config.data.test_per_class = args.test_per_class;
    let data = config.prepare_data(image.input_size())?;
    let templates: Vec<String> = if args.ensemble {
        IMAGENET_TEMPLATES.iter().map(|t| t.to_string()).collect()
    } else {
        vec![args.template.unwrap_or_else(|| PAPER_TEMPLATE.to_string())]
    };
    let head = clip_head(&data.test.classes, &templates, 64, device, |tokens| {
        text.forward(tokens)
    })?;
    eprintln!(
        "text head: {} classes x {} templates, {}-d",
        head.num_classes(),
        templates.len(),
        head.source_dim()
    );
    // The unprompted path of a classifier is the zero-shot classifier.
    let unused = PaddingPromptConfig::new(1).init(image.input_size(), device)?;
    let classifier = PromptedClassifier::new(unused.into(), image, head)?;
    let loader = BatchLoader::new(data.test.clone(), 64)?;
    let eval = evaluate(&classifier, &loader, device, false)?;
    println!(
        "zero-shot on {} test images: top-1 {:.2}%, top-5 {:.2}%",
        eval.count,
        100.0 * eval.top1,
        100.0 * eval.top5
    );
    Ok(())
}

fn inspect(path: &Path, png: Option<&Path>, device: &Device) -> anyhow::Result<()> {
    let prompt = if path.is_dir() {
        RunDir::create(path)?
            .load_best(device)?
            .with_context(|| format!("{} has no selected prompt yet", path.display()))?
            .0
    } else {
        Prompt::load(path, device)?
    };
    let values = prompt
        .perturbation(Phase::Eval { batch: 0 })
        .into_data()
        .try_into_vec_as::<f32>()?;
    let learned: Vec<f32> = values.iter().copied().filter(|v| *v != 0.0).collect();
    let n = learned.len().max(1) as f64;
    let mean = learned.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (learned.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (min, max) = learned
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let l2 = learned.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    println!("template      {}", prompt.config().to_json());
    println!(
        "image size    {:?} (images delivered at {:?})",
        prompt.image_size(),
        prompt.input_size()
    );
    println!("space         {:?}", prompt.space());
    println!("parameters    {}", prompt.num_params());
    println!("non-zero      {} values", learned.len());
    println!("values        min {min:.4}  max {max:.4}  mean {mean:.4}  std {std:.4}  L2 {l2:.4}");
    if let Some(png) = png {
        let scale = prompt.save_png(png)?;
        println!("wrote {} (grey = 0, black/white = -/+{scale:.3})", png.display());
    }
    Ok(())
}
