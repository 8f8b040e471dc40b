//! [`Run`]: a run as a library object. It owns its run directory: it checks once that the
//! directory holds this run or none (the settings compared key by key, the classes, the data's and
//! weights' fingerprints), records the run's config, classes and fingerprints (each file replaced
//! atomically), and hands the engine the directory for its checkpoints. [`Run::load`] gives a
//! trained run back as a ready classifier, for evaluation, application to images and serving.
//!
//! ```text
//! run/
//!   run.json        the run config (a resumed run must have the same settings)
//!   classes.txt     the class names, one per line
//!   data.json       fingerprints of the splits and of the weights files
//!   ...             the engine's: config.json, checkpoints/, best/, metrics.jsonl, curves
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use serde::Serialize;
use vprompt_backbone::{Backbone, ImageBackbone};
use vprompt_data::{BatchLoader, Dataset, RawImage, prepare};
use vprompt_prompt::{Phase, Prompt, VisualPrompt};
use vprompt_train::{
    BlackBoxModel, BlackBoxReport, BlackBoxTrained, Ensemble, EnsembleEvaluation, Evaluation, LinearProbe,
    LocalModel, Prediction, Progress, PromptedClassifier, Report, RunDir, Trained, Trainer, TrainingConfig,
    evaluate_unprompted, evaluate_with, fit_mapping,
};

use crate::assemble::{DataFingerprints, PreparedSplits};
use crate::config::{BlackBoxChoice, BlackBoxSource, MethodConfig, ProbeChoice, RunConfig};
use crate::curves::Curves;
use crate::error::{Context, Result, RunError, io};
use crate::remote::{Endpoint, RemoteModel};

/// The run config's file in a run directory.
pub const RUN_FILE: &str = "run.json";
/// The class names in a run directory, one per line.
pub const CLASSES_FILE: &str = "classes.txt";
/// The data and weights fingerprints, in a run directory.
pub const DATA_FILE: &str = "data.json";

/// The files and folders a run writes in its directory (the run layer's, the engine's, the
/// tool's prompt picture): all that [`Run::fresh`] removes. Anything else in the directory is the
/// user's and is never touched.
pub const RUN_ENTRIES: &[&str] = &[
    RUN_FILE,
    CLASSES_FILE,
    DATA_FILE,
    "config.json",
    "checkpoint.json",
    "checkpoints",
    "best.json",
    "best",
    "metrics.jsonl",
    "loss.png",
    "accuracy.png",
    "accuracy-vs-queries.png",
    "prompt.png",
];

/// A run: its config, checked, and the directory it owns (`config.run_dir`).
#[derive(Debug, Clone)]
pub struct Run {
    config: RunConfig,
    fresh: bool,
}

/// A finished (or interrupted) gradient training run.
pub struct TrainedRun {
    /// The selected classifier and the records.
    pub trained: Trained<ImageBackbone>,
    /// The prepared splits (the test split is not used by training).
    pub data: PreparedSplits,
    /// The effective training config it ran with.
    pub training: TrainingConfig,
    /// The test split, prompted and unprompted (`None` when the run was interrupted).
    pub report: Option<Report>,
}

/// A finished (or interrupted) black-box run.
pub struct BlackBoxRun {
    /// The selected prompt and the run's record.
    pub trained: BlackBoxTrained,
    /// The test split, prompted and unprompted, through the model.
    pub report: BlackBoxReport,
    /// Queries of a remote model that failed transiently and were sent again.
    pub retried: u64,
    /// Images of the training split.
    pub train_images: usize,
}

/// A trained linear probe and its test accuracy.
pub struct ProbeRun {
    /// The selected layer.
    pub probe: LinearProbe,
    /// The test split.
    pub evaluation: Evaluation,
    /// Images of the training split.
    pub train_images: usize,
}

/// An unprompted run: the frozen model and its head on the test split.
pub struct UnpromptedRun {
    /// The test split.
    pub evaluation: Evaluation,
    /// Images of the training split (what a fitted mapping was fitted on).
    pub train_images: usize,
}

/// What [`Run::run`] did, by method.
pub enum Finished {
    /// A visual prompt trained by gradient steps.
    VisualPrompt(Box<TrainedRun>),
    /// A visual prompt trained by queries.
    BlackBox(Box<BlackBoxRun>),
    /// A linear probe.
    LinearProbe(Box<ProbeRun>),
    /// No training.
    Unprompted(UnpromptedRun),
}

/// The numbers every method reports, for tables and experiment records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Test top-1 in `[0, 1]`.
    pub top1: f64,
    /// Test top-1 of the same head without the prompt (prompted methods).
    pub unprompted_top1: Option<f64>,
    /// The prompt's learned values (prompted methods).
    pub prompt_parameters: Option<usize>,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
}

impl Finished {
    /// Whether training stopped before its end (a step limit): no test evaluation was made.
    pub fn interrupted(&self) -> bool {
        match self {
            Finished::VisualPrompt(run) => run.report.is_none(),
            Finished::BlackBox(run) => run.trained.interrupted,
            _ => false,
        }
    }

    /// The test numbers (`None` for an interrupted run).
    pub fn summary(&self) -> Option<Summary> {
        Some(match self {
            Finished::VisualPrompt(run) => {
                let report = run.report.as_ref()?;
                Summary {
                    top1: report.prompted.top1,
                    unprompted_top1: Some(report.unprompted.top1),
                    prompt_parameters: run.trained.classifier.prompt.as_ref().map(Prompt::num_params),
                    train_images: run.data.train.len(),
                    test_images: run.data.test.len(),
                }
            }
            Finished::BlackBox(run) => Summary {
                top1: run.report.prompted.top1,
                unprompted_top1: Some(run.report.unprompted.top1),
                prompt_parameters: Some(run.trained.prompt.num_params()),
                train_images: run.train_images,
                test_images: run.report.prompted.count,
            },
            Finished::LinearProbe(run) => Summary {
                top1: run.evaluation.top1,
                unprompted_top1: None,
                prompt_parameters: None,
                train_images: run.train_images,
                test_images: run.evaluation.count,
            },
            Finished::Unprompted(run) => Summary {
                top1: run.evaluation.top1,
                unprompted_top1: None,
                prompt_parameters: None,
                train_images: run.train_images,
                test_images: run.evaluation.count,
            },
        })
    }
}

impl Run {
    /// A run of `config` in `config.run_dir`. Every setting is checked here (for a prompted
    /// method, the prompt against the input size too); nothing is read or written yet.
    pub fn new(config: RunConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, fresh: false })
    }

    /// Starts the run again instead of resuming it: once the new run's inputs are read (so that a
    /// broken data path or weights file loses nothing), the files a run writes ([`RUN_ENTRIES`])
    /// are removed from the directory; anything else in it stays as it is, and the directory
    /// itself is kept.
    pub fn fresh(mut self, fresh: bool) -> Self {
        self.fresh = fresh;
        self
    }

    /// The run's settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.config.run_dir
    }

    /// Runs the config's method on `devices` (the first is the main one; more split each batch
    /// of a visual prompt's gradient steps: data parallel): loads the backbone and data, records
    /// the run in its directory (or checks that the directory holds this run), trains through the
    /// engine (which resumes from the directory's checkpoint if there is one) and evaluates on
    /// the test split. What `vprompt train`, `vprompt black-box` and every experiment cell run.
    pub fn run(&self, devices: &[Device], progress: Arc<dyn Progress>) -> Result<Finished> {
        let device = devices
            .first()
            .ok_or_else(|| RunError::Refused("no device to train on".into()))?;
        Ok(match &self.config.method {
            MethodConfig::VisualPrompt(_) => Finished::VisualPrompt(Box::new(self.train(devices, progress)?)),
            MethodConfig::BlackBox(choice) => {
                Finished::BlackBox(Box::new(self.train_black_box(choice, device, progress)?))
            }
            MethodConfig::LinearProbe(choice) => {
                Finished::LinearProbe(Box::new(self.train_probe(choice, device, progress)?))
            }
            MethodConfig::Unprompted => Finished::Unprompted(self.unprompted(device, progress)?),
        })
    }

    /// A visual prompt by gradient steps.
    fn train(&self, devices: &[Device], progress: Arc<dyn Progress>) -> Result<TrainedRun> {
        let c = &self.config;
        let device = &devices[0];
        let training = c.training_config()?;
        let backbone = c.backbone(device)?;
        let prompt = c.prompt.init(backbone.input_size(), device)?;
        let data = c.prepare_data(prompt.input_size(), progress.as_ref())?;
        let head = c.head(&backbone, &data.train.classes, device)?;
        let classifier = PromptedClassifier::new(prompt, backbone, head)?;
        self.record(&data, progress.as_ref())?;
        let trainer = Trainer::new(training.clone(), device)
            .with_devices(devices)?
            .with_run_dir(self.dir())
            .with_progress(progress)
            .with_observer(Arc::new(Curves));
        let trained = match &data.valid {
            Some(valid) => trainer.train(classifier, data.train.clone(), valid.clone())?,
            None => trainer.train_without_validation(classifier, data.train.clone())?,
        };
        let report = match trained.interrupted {
            true => None,
            false => Some(trained.evaluate(data.test.clone(), training.batch_size)?),
        };
        Ok(TrainedRun {
            trained,
            data,
            training,
            report,
        })
    }

    /// A linear probe on the frozen features, selected on the validation split.
    fn train_probe(
        &self,
        choice: &ProbeChoice,
        device: &Device,
        progress: Arc<dyn Progress>,
    ) -> Result<ProbeRun> {
        let c = &self.config;
        let backbone = c.backbone(device)?;
        let data = c.prepare_data(backbone.input_size(), progress.as_ref())?;
        let valid = data.valid.clone().ok_or_else(|| {
            RunError::Refused(
                "a linear probe is selected on a validation split: set data.validation > 0".into(),
            )
        })?;
        self.record(&data, progress.as_ref())?;
        let probe = Trainer::new(choice.config(), device)
            .with_run_dir(self.dir())
            .with_progress(progress)
            .with_observer(Arc::new(Curves))
            .train(&backbone, data.train.clone(), valid)?;
        let evaluation = probe.evaluate(&backbone, &data.test, device)?;
        Ok(ProbeRun {
            probe,
            evaluation,
            train_images: data.train.len(),
        })
    }

    /// The frozen model and its head on the test split; a mapping made from data (frequency,
    /// iterative, Bayesian) is fitted on the training split's unprompted outputs first.
    fn unprompted(&self, device: &Device, progress: Arc<dyn Progress>) -> Result<UnpromptedRun> {
        let c = &self.config;
        let training = c.training_config()?;
        let backbone = c.backbone(device)?;
        let data = c.prepare_data(backbone.input_size(), progress.as_ref())?;
        let head = c.head(&backbone, &data.train.classes, device)?;
        self.record(&data, progress.as_ref())?;
        let mut classifier = PromptedClassifier::unprompted(backbone, head)?;
        if let Some(mapping) = &training.mapping {
            let loader = BatchLoader::new(data.train.clone(), training.batch_size)?;
            classifier.mapping = fit_mapping(&classifier, mapping, &loader, device)?;
        }
        let evaluation = evaluate_unprompted(&classifier, data.test.clone(), training.batch_size, device)?;
        Ok(UnpromptedRun {
            evaluation,
            train_images: data.train.len(),
        })
    }

    /// A visual prompt by queries alone, selected on the validation split and evaluated on the
    /// test split through the same model, every query counted.
    fn train_black_box(
        &self,
        choice: &BlackBoxChoice,
        device: &Device,
        progress: Arc<dyn Progress>,
    ) -> Result<BlackBoxRun> {
        let c = &self.config;
        let size = c.input_size()?;
        let prompt = c.prompt.init(size, device)?;
        let data = c.prepare_data(prompt.input_size(), progress.as_ref())?;
        let valid = data.valid.clone().ok_or_else(|| {
            RunError::Refused(
                "black-box training selects on a validation split: set data.validation > 0".into(),
            )
        })?;
        let classes = data.train.classes.len();
        let (mut remote, mut local) = (None, None);
        let model: &mut dyn BlackBoxModel = match &choice.model {
            BlackBoxSource::Local => {
                let backbone = c.backbone(device)?;
                let head = c.head(&backbone, &data.train.classes, device)?;
                local.insert(LocalModel::new(backbone, head)?)
            }
            BlackBoxSource::Command(argv) => remote.insert(RemoteModel::new(
                Endpoint::Command(argv.clone()),
                size,
                classes,
                choice.scores,
                choice.retry(),
            )),
            BlackBoxSource::Http(url) => remote.insert(RemoteModel::new(
                Endpoint::Http(url.clone()),
                size,
                classes,
                choice.scores,
                choice.retry(),
            )),
        };
        self.record(&data, progress.as_ref())?;
        let trained = Trainer::new(choice.config(), device)
            .with_run_dir(self.dir())
            .with_progress(progress)
            .with_observer(Arc::new(Curves))
            .train(&mut *model, prompt, data.train.clone(), valid)?;
        let report = trained.evaluate(&mut *model, data.test.clone(), choice.batch_size)?;
        let retried = remote.map_or(0, |r: RemoteModel| r.retried);
        Ok(BlackBoxRun {
            trained,
            report,
            retried,
            train_images: data.train.len(),
        })
    }

    /// Checks that the run directory holds this run or none, then records the run's config,
    /// classes and data fingerprints in it.
    fn record(&self, data: &PreparedSplits, progress: &dyn Progress) -> Result<()> {
        if self.fresh {
            self.remove_run_files()?;
        }
        let fingerprints = self.config.weights_fingerprints(data.fingerprints)?;
        self.check_identity(&data.train.classes, &fingerprints, progress)?;
        let dir = self.dir();
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        write_text(&dir.join(CLASSES_FILE), &(data.train.classes.join("\n") + "\n"))?;
        write_json(&dir.join(RUN_FILE), &self.config)?;
        write_json(&dir.join(DATA_FILE), &fingerprints)
    }

    /// Before anything is written: a run directory that holds a run already is resumed only by
    /// the identical run config, classes and inputs; anything else is refused with the settings
    /// that differ (a prompt of another size or other data would otherwise "resume" the old run
    /// and report its prompt).
    fn check_identity(
        &self,
        classes: &[String],
        data: &DataFingerprints,
        progress: &dyn Progress,
    ) -> Result<()> {
        let dir = self.dir();
        if !dir.join(RUN_FILE).exists() {
            if dir.join("checkpoint.json").exists() || dir.join("checkpoints").exists() {
                return Err(RunError::run_dir(
                    dir,
                    format!(
                        "holds checkpoints but no {RUN_FILE}: it is not a run this tool can resume; use a \
                         new run_dir (or remove this one)"
                    ),
                ));
            }
            return Ok(());
        }
        // Read typed, so that settings added since it was written compare as their defaults.
        let old = read_config(dir).context("use a new run_dir")?;
        let differences = differences(&old, &self.config);
        let extension = match differences.is_empty() {
            true => None,
            false => match self.extension_of(&old)? {
                Some(extension) => Some(extension),
                None => {
                    return Err(RunError::OtherRun {
                        dir: dir.to_path_buf(),
                        differences,
                    });
                }
            },
        };
        if let Ok(recorded) = class_names(dir)
            && recorded != classes
        {
            return Err(RunError::run_dir(
                dir,
                format!(
                    "was trained on the classes {recorded:?}, the data now has {classes:?}; use a new run_dir"
                ),
            ));
        }
        if let Some(recorded) = recorded_fingerprints(dir)? {
            if (recorded.train, recorded.valid) != (data.train, data.valid) {
                return Err(RunError::run_dir(
                    dir,
                    "was trained on other data: the same settings now read other images or labels \
                     (changed files?); use a new run_dir, or --fresh to start this one again",
                ));
            }
            check_same_weights(dir, &recorded, data)?;
        }
        // Only once every check has passed: the engine's own record of its settings follows the
        // extension, so that it resumes.
        if let Some((from, to)) = extension {
            let run = RunDir::create(dir)?;
            match &self.config.method {
                MethodConfig::VisualPrompt(_) => {
                    run.replace_config("training", &self.config.training_config()?)?
                }
                MethodConfig::BlackBox(c) => run.replace_config("black_box", &c.config())?,
                MethodConfig::LinearProbe(c) => run.replace_config("linear_probe", &c.config())?,
                MethodConfig::Unprompted => {}
            }
            progress.line(&format!(
                "extending {} from {from} to {to} epochs: its {} does not depend on the run's length, \
                 so the run continues as if it had been {to} epochs from the start",
                dir.display(),
                match &self.config.method {
                    MethodConfig::BlackBox(_) => "step size",
                    _ => "learning rate",
                }
            ));
        }
        Ok(())
    }

    /// When this run differs from `old`, the run its directory holds, only in more epochs of the
    /// same method: `Some((old epochs, new epochs))` if the method's schedule lets the run continue
    /// exactly as if it had been that long from the start (a constant learning rate, SPSA-GC's
    /// step sizes, the linear probe's Adam), an error with the reason if it does not; `None` if
    /// they differ in anything else.
    fn extension_of(&self, old: &RunConfig) -> Result<Option<(usize, usize)>> {
        let new = &self.config;
        let mut patched = old.clone();
        let (from, to, exact, schedule) = match (&mut patched.method, &new.method) {
            (MethodConfig::VisualPrompt(o), MethodConfig::VisualPrompt(n)) => {
                let from = old.training_config()?.epochs;
                o.epochs = n.epochs;
                let training = new.training_config()?;
                let exact = training.schedule.extends_exactly();
                (
                    from,
                    training.epochs,
                    exact,
                    format!("{:?} learning-rate schedule", training.schedule),
                )
            }
            (MethodConfig::BlackBox(o), MethodConfig::BlackBox(n)) => {
                let from = o.epochs;
                o.epochs = n.epochs;
                let exact = n.optimizer.extends_exactly();
                (
                    from,
                    n.epochs,
                    exact,
                    format!("{} step sizes", n.optimizer.name()),
                )
            }
            (MethodConfig::LinearProbe(o), MethodConfig::LinearProbe(n)) => {
                let from = o.config().epochs;
                o.epochs = n.epochs;
                (from, n.config().epochs, true, String::new())
            }
            _ => return Ok(None),
        };
        if patched != *new || to == from {
            return Ok(None);
        }
        let dir = self.dir();
        if to < from {
            return Err(RunError::run_dir(
                dir,
                format!(
                    "holds a run of {from} epochs; {to} would end it before where it already is: use a \
                     new run_dir, or --fresh to start this one again"
                ),
            ));
        }
        if !exact {
            return Err(RunError::run_dir(
                dir,
                format!(
                    "holds a run of {from} epochs whose {schedule} is laid over the run's length: {to} \
                     epochs would change the rate of the steps already taken, so the run cannot be \
                     extended exactly; use a new run_dir (or --fresh), or a schedule that does not \
                     depend on the length (\"Constant\", SPSA-GC)"
                ),
            ));
        }
        Ok(Some((from, to)))
    }

    /// Removes the files a run writes ([`RUN_ENTRIES`]) from the run directory, and nothing else.
    fn remove_run_files(&self) -> Result<()> {
        let dir = self.dir();
        for name in RUN_ENTRIES {
            let path = dir.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                std::fs::remove_dir_all(&path).map_err(io("delete", &path))?;
            } else {
                std::fs::remove_file(&path).map_err(io("delete", &path))?;
            }
        }
        vprompt_core::fs::sync_dir(dir);
        Ok(())
    }

    /// Loads a finished (or interrupted) run's selected state as a ready classifier: the run's
    /// backbone (its weights checked against the fingerprint recorded at training), the selected
    /// prompt, and its mapping: the selected one of a gradient run, or the head a black-box run
    /// queried its local model through. A run trained against a program or an HTTP endpoint is
    /// refused: its classifier is not in this process.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<LoadedRun> {
        let dir = dir.as_ref();
        let config = read_config(dir)?;
        let classes = class_names(dir)?;
        let selected = || {
            RunDir::create(dir)?.load_best(device)?.ok_or_else(|| {
                RunError::run_dir(dir, "has no selected prompt yet (train at least one epoch)")
            })
        };
        let classifier = match &config.method {
            MethodConfig::VisualPrompt(_) => {
                let (prompt, mapping) = selected()?;
                let mapping = mapping
                    .ok_or_else(|| RunError::run_dir(dir, "its selected prompt has no mapping beside it"))?;
                PromptedClassifier::new(prompt, load_backbone(dir, &config, device)?, mapping)?
            }
            MethodConfig::BlackBox(choice) if choice.model == BlackBoxSource::Local => {
                let (prompt, _) = selected()?;
                let backbone = load_backbone(dir, &config, device)?;
                let head = config.head(&backbone, &classes, device)?;
                PromptedClassifier::new(prompt, backbone, head)?
            }
            MethodConfig::BlackBox(_) => {
                return Err(RunError::run_dir(
                    dir,
                    "was trained against a black box outside this process (a program or an HTTP \
                     endpoint): its classifier cannot be loaded here",
                ));
            }
            MethodConfig::Unprompted if config.mapping_to_fit().is_none() => {
                let backbone = load_backbone(dir, &config, device)?;
                let head = config.head(&backbone, &classes, device)?;
                PromptedClassifier::unprompted(backbone, head)?
            }
            MethodConfig::Unprompted => {
                return Err(RunError::run_dir(
                    dir,
                    format!(
                        "is an unprompted run whose `{}` mapping is fitted on the training split when \
                         it runs, and not kept: run it again",
                        config.mapping.method()
                    ),
                ));
            }
            MethodConfig::LinearProbe(_) => {
                return Err(RunError::run_dir(
                    dir,
                    "is a linear-probe run: loading a probe back as a classifier is not supported yet \
                     (its test accuracy is the last line of metrics.jsonl)",
                ));
            }
        };
        Ok(LoadedRun {
            dir: dir.to_path_buf(),
            config,
            classes,
            classifier,
        })
    }
}

/// The run's backbone, its weights files checked against the fingerprints recorded at training.
fn load_backbone(dir: &Path, config: &RunConfig, device: &Device) -> Result<ImageBackbone> {
    if let Some(recorded) = recorded_fingerprints(dir)? {
        check_same_weights(dir, &recorded, &config.weights_fingerprints(recorded)?)?;
    }
    config.backbone(device)
}

/// A trained run loaded back ([`Run::load`]).
#[derive(Debug, Clone)]
pub struct LoadedRun {
    dir: PathBuf,
    /// The run's settings.
    pub config: RunConfig,
    /// The classes it was trained on, in order.
    pub classes: Vec<String>,
    /// The selected prompt on the run's backbone, with its mapping.
    pub classifier: PromptedClassifier<ImageBackbone>,
}

impl LoadedRun {
    /// The run directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's splits, read and prepared as at training, refused when the test split is not
    /// the one the run recorded (its weights were checked when it was loaded).
    pub fn data(&self, progress: &dyn Progress) -> Result<PreparedSplits> {
        let data = self.config.prepare_data(self.classifier.input_size(), progress)?;
        self.check_data(&data)?;
        Ok(data)
    }

    /// Refuses `data` when its test split is not the one the run recorded.
    fn check_data(&self, data: &PreparedSplits) -> Result<()> {
        if let Some(recorded) = recorded_fingerprints(&self.dir)?
            && recorded.test != data.fingerprints.test
        {
            return Err(RunError::run_dir(
                &self.dir,
                format!(
                    "the test split {} reads now is not the one this run recorded (changed files?): \
                     its accuracy would not be this run's",
                    self.config.data.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// `images` prepared as the run's own data was (its filter, stretch or centre crop, at the
    /// classifier's input size): `[n, 3, H, W]` pixels in `[0, 1]` on `device`.
    pub fn pixels(&self, images: Vec<RawImage>, device: &Device) -> Result<Tensor<4>> {
        let n = images.len();
        let dataset = Dataset {
            source: "images to classify".into(),
            images,
            labels: vec![0; n],
            classes: vec!["?".into()],
            skipped: vec![],
        };
        let prepared = prepare(&dataset, &self.config.preprocess(self.classifier.input_size()))?;
        let batch = BatchLoader::new(Arc::new(prepared), n.max(1))?
            .epoch(0, 0, device)
            .next()
            .ok_or_else(|| RunError::Refused("no images to classify".into()))?;
        Ok(batch.images)
    }

    /// The class of each image (prepared as the run's data was), with its name and probability.
    pub fn classify(&self, images: Vec<RawImage>, device: &Device) -> Result<Vec<(Prediction, String)>> {
        let pixels = self.pixels(images, device)?;
        let predictions = self.classifier.predict(pixels, Phase::Eval { batch: 0 })?;
        Ok(predictions
            .into_iter()
            .map(|p| {
                let name = self.classes.get(p.class).cloned().unwrap_or_default();
                (p, name)
            })
            .collect())
    }

    /// Evaluates the selected prompt on the run's test split, prompted and unprompted.
    pub fn evaluate(&self, device: &Device, progress: &dyn Progress) -> Result<Report> {
        let data = self.data(progress)?;
        let loader = BatchLoader::new(data.test.clone(), self.config.batch_size())?;
        let pass = |label: &str, prompted: bool| {
            let mut task = progress.task(label, data.test.len() as u64, "images");
            evaluate_with(&self.classifier, &loader, device, prompted, task.as_mut())
        };
        Ok(Report {
            classes: data.test.classes.clone(),
            prompted: pass("test, prompted", true)?,
            unprompted: pass("test, unprompted", false)?,
        })
    }
}

/// Several trained runs used together ([`Ensemble`]): loaded, and checked to share their data,
/// backbone and classes, the one check that evaluation and application both make.
#[derive(Debug, Clone)]
pub struct LoadedEnsemble {
    /// The members, in the order given.
    pub members: Vec<LoadedRun>,
    /// Their classifiers combined.
    pub ensemble: Ensemble<ImageBackbone>,
}

/// An ensemble of runs evaluated on their test split.
#[derive(Debug, Clone)]
pub struct EvaluatedEnsemble {
    /// The ensemble's and each member's accuracy.
    pub result: EnsembleEvaluation,
    /// Class names.
    pub classes: Vec<String>,
    /// The members' training images.
    pub train_images: usize,
}

impl LoadedEnsemble {
    /// Loads the runs in `dirs` ([`Run::load`]) and checks that they trained on the same data,
    /// backbone and classes (any templates, mappings and seeds).
    pub fn load(dirs: &[PathBuf], device: &Device) -> Result<Self> {
        let members = dirs
            .iter()
            .map(|dir| Run::load(dir, device))
            .collect::<Result<Vec<_>>>()?;
        let first = members
            .first()
            .ok_or_else(|| RunError::Refused("an ensemble needs at least one run".into()))?;
        for member in &members[1..] {
            let (a, b) = (&first.config, &member.config);
            if a.data != b.data || a.backbone != b.backbone || first.classes != member.classes {
                return Err(RunError::run_dir(
                    member.dir(),
                    format!(
                        "trained on other data, classes or another backbone than {}: an ensemble's \
                         members share all three",
                        first.dir().display()
                    ),
                ));
            }
        }
        let ensemble = Ensemble::new(members.iter().map(|m| m.classifier.clone()).collect())?;
        Ok(Self { members, ensemble })
    }

    /// Evaluates the ensemble, and each member, on the members' test split.
    pub fn evaluate(&self, device: &Device, progress: &dyn Progress) -> Result<EvaluatedEnsemble> {
        let first = &self.members[0];
        // The members share their data config, so one preparation serves all; each member
        // checks it against its own record.
        let data = first.data(progress)?;
        for member in &self.members[1..] {
            member.check_data(&data)?;
        }
        let loader = BatchLoader::new(data.test.clone(), first.config.batch_size())?;
        let mut task = progress.task("test, ensemble", data.test.len() as u64, "images");
        Ok(EvaluatedEnsemble {
            result: self.ensemble.evaluate_with(&loader, device, task.as_mut())?,
            classes: data.test.classes.clone(),
            train_images: data.train.len(),
        })
    }
}

/// The settings where `old` and `new` differ, as `key.path: old -> new`; where the run directory
/// is named from (relative, absolute, moved) is not a setting.
pub fn differences(old: &RunConfig, new: &RunConfig) -> Vec<String> {
    let mut old = serde_json::to_value(old).expect("run configs serialise");
    let mut new = serde_json::to_value(new).expect("run configs serialise");
    for config in [&mut old, &mut new] {
        if let Some(map) = config.as_object_mut() {
            map.remove("run_dir");
        }
    }
    vprompt_core::key_path_differences(&old, &new)
}

/// Refuses weights files whose content differs from what the run recorded.
fn check_same_weights(dir: &Path, recorded: &DataFingerprints, now: &DataFingerprints) -> Result<()> {
    for (what, then, now) in [
        ("backbone.weights", recorded.weights, now.weights),
        ("backbone.text_weights", recorded.text_weights, now.text_weights),
    ] {
        if let (Some(then), Some(now)) = (then, now)
            && then != now
        {
            return Err(RunError::run_dir(
                dir,
                format!(
                    "the file {what} names has changed since the run was trained; use a new run_dir, or \
                     --fresh to start this one again"
                ),
            ));
        }
    }
    Ok(())
}

/// The data fingerprints a run recorded (`None` for runs made before they were).
fn recorded_fingerprints(dir: &Path) -> Result<Option<DataFingerprints>> {
    let path = dir.join(DATA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
            RunError::Parse {
                path,
                what: "fingerprint record",
                source: Box::new(e),
            }
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// The config a run recorded in `dir`.
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Parse {
        path,
        what: "run config",
        source: Box::new(e),
    })
}

/// The class names a run recorded in `dir`.
pub fn class_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(CLASSES_FILE);
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    Ok(text.lines().map(String::from).collect())
}

/// Replaces `path` with `value` as pretty JSON, atomically and durably.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("records serialise");
    write_text(path, &text)
}

/// Replaces `path` with `text`, atomically and durably.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    vprompt_core::fs::write_atomic(path, text.as_bytes()).map_err(io("write", path))
}
