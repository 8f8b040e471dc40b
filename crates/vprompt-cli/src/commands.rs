//! What each subcommand does, over library calls. Results go to stdout, progress and errors to
//! stderr.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::*;
use vprompt::backbone::{Backbone, ImageBackbone, TextEncoder};
use vprompt::data::{BatchLoader, decode_image, save_image};
use vprompt::mapping::{IMAGENET_TEMPLATES, OutputMapping, PAPER_TEMPLATE, clip_head};
use vprompt::prompt::{Phase, Prompt, VisualPrompt};
use vprompt::run::{
    DataConfig, EvaluatedEnsemble, ExperimentConfig, Finished, LoadedEnsemble, MethodConfig, Outcome, Run,
    RunConfig, Share,
};
use vprompt::train::{Evaluation, PromptedClassifier, RunDir, evaluate};

use crate::cli::{Command, TrainArgs, ZeroShotArgs};

/// Runs one subcommand on `device`.
pub fn run(command: Command, device: &Device) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Train(args) => train(&args, device, &mut out),
        Command::Eval { run } => {
            let progress = crate::progress::stderr(false);
            if let [run] = &run[..] {
                let report = Run::load(run, device)?.evaluate(device, progress.as_ref())?;
                return Ok(writeln!(out, "{report}")?);
            }
            let evaluated = LoadedEnsemble::load(&run, device)?.evaluate(device, progress.as_ref())?;
            write_ensemble(&run, &evaluated, &mut out)
        }
        Command::Apply {
            run,
            out: dir,
            images,
        } => apply(&run, &dir, &images, device, &mut out),
        Command::ZeroShot(args) => zero_shot(args, device, &mut out),
        Command::Experiment {
            config,
            profile,
            out: dir,
            quiet,
            shard,
            merge,
        } => {
            let share = match (shard, merge) {
                (Some(shard), _) => Share::Shard(shard),
                (None, true) => Share::Merge,
                (None, false) => Share::All,
            };
            experiment(&config, profile.as_deref(), dir, quiet, share, device, &mut out)
        }
        Command::Import { preset, onnx, output } => {
            let report = vprompt::backbone::import::import_weights(preset, &onnx, &output)?;
            Ok(writeln!(
                out,
                "{}: wrote {} ({} tensors, {} values)",
                report.preset,
                report.output.display(),
                report.tensors,
                report.values
            )?)
        }
        Command::Inspect { path, png } => inspect(&path, png.as_deref(), device, &mut out),
        Command::BlackBox { config, quiet, fresh } => black_box(&config, quiet, fresh, device, &mut out),
        Command::Serve {
            run,
            config,
            classes,
            http,
            max_batch,
            max_body_mb,
        } => {
            let limits = vprompt::run::Limits {
                max_batch,
                max_body_bytes: max_body_mb.saturating_mul(1 << 20),
                ..Default::default()
            };
            let mut model: Box<dyn vprompt::train::BlackBoxModel> = match (run, config, classes) {
                (Some(run), _, _) => Box::new(Run::load(&run, device)?),
                (None, Some(config), Some(classes)) => Box::new(configured_model(&config, classes, device)?),
                _ => anyhow::bail!("give --run DIR, or --config FILE with --classes N"),
            };
            serve(model.as_mut(), http.as_deref(), &limits, device)
        }
    }
}

fn train(args: &TrainArgs, device: &Device, out: &mut impl Write) -> anyhow::Result<()> {
    let run = Run::new(args.run_config()?)?.fresh(args.fresh);
    let progress = crate::progress::stderr(args.quiet);
    let devices = match &args.devices {
        Some(names) => names
            .iter()
            .map(|name| name.device())
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![device.clone()],
    };
    if let Some(names) = args.devices.as_ref().filter(|names| names.len() > 1) {
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        progress.line(&format!("data parallel over {}", names.join(", ")));
    }
    run_and_report(&run, &devices, progress, out)
}

/// Runs `run` (whatever its method) and prints its test results and where its selection is.
fn run_and_report(
    run: &Run,
    devices: &[Device],
    progress: std::sync::Arc<dyn vprompt::train::Progress>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let dir = run.dir().to_path_buf();
    progress.line(&format!(
        "training into {} ({})",
        dir.display(),
        run.config().method.name()
    ));
    let finished = run.run(devices, progress)?;
    if finished.interrupted() {
        return Ok(());
    }
    let png = dir.join("prompt.png");
    match finished {
        Finished::VisualPrompt(run) => {
            let trained = &run.trained;
            if let Some(report) = &run.report {
                writeln!(out, "{report}")?;
            }
            trained.prompt().save_png(&png)?;
            let which = match trained.best {
                Some((epoch, top1)) => format!("epoch {epoch}, best validation top-1 {:.2} %", 100.0 * top1),
                None => format!("epoch {}, the last: no validation split", trained.selected_epoch),
            };
            writeln!(
                out,
                "selected prompt ({which}): {}, {}",
                dir.join("best.json").display(),
                png.display()
            )?;
        }
        Finished::BlackBox(run) => {
            let r = &run.report;
            writeln!(out, "{} images", r.prompted.count)?;
            writeln!(out, "              prompted  unprompted")?;
            writeln!(
                out,
                "top-1         {:>7.2}%  {:>9.2}%",
                100.0 * r.prompted.top1,
                100.0 * r.unprompted.top1
            )?;
            writeln!(
                out,
                "queries: training {}, validation {}, test {}{}{}",
                r.training_queries,
                r.validation_queries,
                r.evaluation_queries,
                if run.trained.budget_exhausted {
                    " (the budget ended training)"
                } else {
                    ""
                },
                if run.retried > 0 {
                    format!("; {} attempts retried", run.retried)
                } else {
                    String::new()
                }
            )?;
            run.trained.prompt.save_png(&png)?;
            writeln!(out, "selected prompt: {}", png.display())?;
        }
        Finished::LinearProbe(run) => {
            let e = &run.evaluation;
            writeln!(out, "{} images", e.count)?;
            writeln!(out, "top-1         {:>7.2}%", 100.0 * e.top1)?;
            writeln!(out, "top-5         {:>7.2}%", 100.0 * e.top5)?;
            if let Some((epoch, top1)) = run.probe.best {
                writeln!(
                    out,
                    "selected probe: epoch {epoch}, best validation top-1 {:.2} %",
                    100.0 * top1
                )?;
            }
        }
        Finished::Unprompted(run) => {
            let e = &run.evaluation;
            writeln!(out, "{} images", e.count)?;
            writeln!(out, "top-1         {:>7.2}%", 100.0 * e.top1)?;
            writeln!(out, "top-5         {:>7.2}%", 100.0 * e.top5)?;
        }
    }
    Ok(())
}

/// An ensemble's test accuracy beside each run's.
fn write_ensemble(
    runs: &[PathBuf],
    evaluated: &EvaluatedEnsemble,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let result = &evaluated.result;
    writeln!(out, "{} images, {} runs", result.ensemble.count, runs.len())?;
    writeln!(out, "{:<40} {:>8} {:>8} {:>8}", "", "top-1", "top-5", "loss")?;
    let row = |out: &mut dyn Write, name: &str, e: &Evaluation| {
        writeln!(
            out,
            "{name:<40} {:>7.2}% {:>7.2}% {:>8.4}",
            100.0 * e.top1,
            100.0 * e.top5,
            e.loss
        )
    };
    for (dir, e) in runs.iter().zip(&result.members) {
        row(out, &dir.display().to_string(), e)?;
    }
    writeln!(
        out,
        "{:<40} {:>7.2}%",
        "members' mean",
        100.0 * result.mean_member_top1()
    )?;
    row(out, "ensemble (mean probabilities)", &result.ensemble)?;
    writeln!(out, "per class (top-1, ensemble):")?;
    for (k, name) in evaluated.classes.iter().enumerate() {
        writeln!(out, "  {name:<20} {:>6.1}%", 100.0 * result.ensemble.per_class[k])?;
    }
    Ok(())
}

fn apply(
    dirs: &[PathBuf],
    out_dir: &Path,
    images: &[PathBuf],
    device: &Device,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let LoadedEnsemble { members, ensemble } = LoadedEnsemble::load(dirs, device)?;
    // Every output name is decided, and checked free, before anything is written.
    let mut planned: Vec<Vec<PathBuf>> = Vec::with_capacity(images.len());
    let mut taken: std::collections::HashMap<PathBuf, &Path> = std::collections::HashMap::new();
    for path in images {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let files: Vec<PathBuf> = (0..members.len())
            .map(|k| match members.len() {
                1 => out_dir.join(format!("{stem}.png")),
                _ => out_dir.join(format!("{stem}.{k}.png")),
            })
            .collect();
        for file in &files {
            if let Some(other) = taken.insert(file.clone(), path) {
                anyhow::bail!(
                    "{} and {} would both be written to {}: apply them in separate runs, or rename one",
                    other.display(),
                    path.display(),
                    file.display()
                );
            }
            if file.exists() {
                anyhow::bail!(
                    "{} exists: apply never overwrites; choose another --out or remove it",
                    file.display()
                );
            }
        }
        planned.push(files);
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let phase = Phase::Eval { batch: 0 };
    for (path, files) in images.iter().zip(planned) {
        let image = decode_image(path)?;
        // The members share their data config, so the first one's preprocessing is everyone's.
        let pixels = members[0].pixels(vec![image], device)?;
        let prediction = ensemble.predict(pixels.clone())?[0];
        let name = members[0]
            .classes
            .get(prediction.class)
            .cloned()
            .unwrap_or_else(|| format!("class {}", prediction.class));
        for (k, file) in files.iter().enumerate() {
            let shown = members[k].classifier.prompted_pixels(pixels.clone(), phase)?;
            save_image(shown.squeeze_dim::<3>(0), file)?;
        }
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        writeln!(
            out,
            "{}: {name} ({:.1}%) -> {}",
            path.display(),
            100.0 * prediction.probability,
            files.join(", ")
        )?;
    }
    Ok(())
}

fn black_box(
    path: &Path,
    quiet: bool,
    fresh: bool,
    device: &Device,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let run = Run::new(vprompt::run::read_config_file::<RunConfig>(path, "run config")?)?.fresh(fresh);
    anyhow::ensure!(
        matches!(run.config().method, MethodConfig::BlackBox(_)),
        "{}: `vprompt black-box` runs configs whose method is BlackBox (`[method.BlackBox]`); this \
         one's is {}: run it with `vprompt train --config`",
        path.display(),
        run.config().method.name()
    );
    run_and_report(
        &run,
        std::slice::from_ref(device),
        crate::progress::stderr(quiet),
        out,
    )
}

/// A run config's backbone and mapping (one made without data) as a black box, unprompted.
fn configured_model(
    path: &Path,
    classes: usize,
    device: &Device,
) -> anyhow::Result<vprompt::train::LocalModel<ImageBackbone>> {
    let config = vprompt::run::read_config_file::<RunConfig>(path, "run config")?;
    let backbone = config.backbone(device)?;
    anyhow::ensure!(
        !config.mapping.needs_fit() && !config.mapping.is_learned(),
        "`vprompt serve --config` serves a mapping made without data (first-N, random, manual), not \
         `{}`: serve the trained run with --run instead",
        config.mapping.method()
    );
    let mapping = config.mapping.init(backbone.output_dim(), classes, device)?;
    Ok(vprompt::train::LocalModel::new(backbone, mapping)?)
}

fn serve(
    model: &mut dyn vprompt::train::BlackBoxModel,
    http: Option<&str>,
    limits: &vprompt::run::Limits,
    device: &Device,
) -> anyhow::Result<()> {
    match http {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen on {address}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "serving on http://{}", listener.local_addr()?)?;
            out.flush()?;
            drop(out);
            Ok(vprompt::run::serve_http(model, device, &listener, limits, None)?)
        }
        None => Ok(vprompt::run::serve_lines(
            model,
            device,
            limits,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        )?),
    }
}

fn experiment(
    path: &Path,
    profile: Option<&str>,
    dir: Option<PathBuf>,
    quiet: bool,
    share: Share,
    device: &Device,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let config: ExperimentConfig = vprompt::run::read_config_file(path, "experiment config")?;
    let dir = dir.unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map_or("experiment".into(), |s| s.to_string_lossy().into_owned());
        let name = match profile {
            Some(p) => format!("{stem}-{p}"),
            None => stem,
        };
        Path::new("runs/experiments").join(name)
    });
    match config.run(profile, &dir, device, share, crate::progress::stderr(quiet))? {
        Outcome::Complete(results) => {
            writeln!(out, "{}", vprompt::run::report(&results).0)?;
            writeln!(out, "wrote {}", dir.join("results.md").display())?;
            Ok(())
        }
        Outcome::Incomplete { missing } => {
            let shown = missing.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
            let more = if missing.len() > 5 {
                format!("; and {} more", missing.len() - 5)
            } else {
                String::new()
            };
            match share {
                Share::Shard(shard) => {
                    writeln!(
                        out,
                        "share {shard} is done; {} cells of other shares are not recorded yet ({shown}{more}); \
                         the last share to finish writes the merged results (or this command with \
                         --merge in place of --shard, once they are all done)",
                        missing.len()
                    )?;
                    Ok(())
                }
                _ => anyhow::bail!("{} cells are not recorded yet: {shown}{more}", missing.len()),
            }
        }
    }
}

fn zero_shot(args: ZeroShotArgs, device: &Device, out: &mut impl Write) -> anyhow::Result<()> {
    let image = ImageBackbone::load(args.image_preset, &args.image_weights, device)?;
    let text = TextEncoder::load(args.text_preset, &args.text_weights, device)?;
    let config = RunConfig::new(
        std::env::temp_dir().join("vprompt-zero-shot"),
        DataConfig::new(args.data_format, args.data).with_test_per_class(args.test_per_class),
    );
    let progress = crate::progress::stderr(false);
    let data = config.prepare_data(image.input_size(), progress.as_ref())?;
    let templates: Vec<String> = if args.ensemble {
        IMAGENET_TEMPLATES.iter().map(|t| t.to_string()).collect()
    } else {
        vec![args.template.unwrap_or_else(|| PAPER_TEMPLATE.to_string())]
    };
    let head = clip_head(&data.test.classes, &templates, 64, device, |tokens| {
        text.forward(tokens)
    })?
    .with_scale(text.logit_scale())?;
    progress.line(&format!(
        "text head: {} classes x {} templates, {}-d",
        head.num_classes(),
        templates.len(),
        head.source_dim()
    ));
    let classifier = PromptedClassifier::unprompted(image, head)?;
    let loader = BatchLoader::new(data.test.clone(), 64)?;
    let eval = evaluate(&classifier, &loader, device, false)?;
    writeln!(
        out,
        "zero-shot on {} test images: top-1 {:.2}%, top-5 {:.2}%",
        eval.count,
        100.0 * eval.top1,
        100.0 * eval.top5
    )?;
    Ok(())
}

fn inspect(path: &Path, png: Option<&Path>, device: &Device, out: &mut impl Write) -> anyhow::Result<()> {
    let prompt = if path.is_dir() {
        RunDir::create(path)?
            .load_best(device)?
            .with_context(|| format!("{} has no selected prompt yet", path.display()))?
            .0
    } else {
        Prompt::load(path, device)?
    };
    let stats = prompt.statistics();
    writeln!(out, "template      {}", prompt.config().to_json())?;
    writeln!(
        out,
        "image size    {:?} (images delivered at {:?})",
        prompt.image_size(),
        prompt.input_size()
    )?;
    writeln!(out, "space         {:?}", prompt.space())?;
    match &prompt {
        Prompt::Conditional(p) => writeln!(
            out,
            "parameters    {} (template {} + generator {})",
            prompt.num_params(),
            p.template().num_params(),
            p.generator_params()
        )?,
        _ => writeln!(out, "parameters    {}", prompt.num_params())?,
    }
    writeln!(out, "non-zero      {} values", stats.nonzero)?;
    writeln!(out, "values        {stats}")?;
    if let Some(png) = png {
        let scale = prompt.save_png(png)?;
        writeln!(
            out,
            "wrote {} (grey = 0, black/white = -/+{scale:.3})",
            png.display()
        )?;
    }
    Ok(())
}
