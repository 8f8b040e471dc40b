//! A whole visual-prompting run described by one config (what `vprompt train --config run.toml`
//! reads): data, backbone, prompt, mapping, training recipe, run directory. Every field has a
//! default except the run directory and the data; the config is written to the run directory.
//!
//! ```toml
//! run_dir = "runs/fmnist"
//!
//! [data]
//! format = "fashion-mnist"            # fashion-mnist, mnist, cifar10, cifar100, folder, csv
//! path = "/usr/share/datasets/fashion-mnist"
//! validation = 0.1                    # held out of train, seeded and stratified
//!
//! [backbone]
//! preset = "efficientnet-lite0"       # weights = "resnet50.bpk" for bring-your-own presets
//! # input_size = [288, 288]           # other sizes: convolutional presets only
//!
//! [prompt]
//! Padding = { pad = 30 }              # any template, omitted fields take their defaults
//!
//! [training]
//! recipe = "paper"                    # paper, ilm-vp, evp; then any override:
//! epochs = 20
//! batch_size = 64
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt::backbone::{Backbone, ImageBackbone, Modality, Preset, TextEncoder};
use vprompt::data::{
    Dataset, Filter, Fit, OnError, PreparedDataset, Preprocess, Splits, cache_key, cifar10, cifar100,
    csv_list, fashion_mnist, image_folder, mnist, prepare_cached_with,
};
use vprompt::mapping::{LabelMappingConfig, Mapping, PAPER_TEMPLATE, clip_head};
use vprompt::prompt::{PaddingPromptConfig, PromptConfig, VisualPrompt};
use vprompt::train::{
    BlackBoxConfig, BlackBoxReport, BlackBoxTrained, ConfigError, Ensemble, EnsembleEvaluation, LocalModel,
    Progress, PromptedClassifier, Recipe, Report, RunDir, ScheduleConfig, Scores, Trained, Trainer,
    TrainingConfig, ZerothOrderConfig, evaluate_with, init_mapping,
};

use crate::remote::{Endpoint, RemoteModel, Retry};

/// How the dataset is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// Fashion-MNIST's IDX files (the official split).
    FashionMnist,
    /// MNIST's IDX files (the official split).
    Mnist,
    /// CIFAR-10's binary batches (the official split).
    Cifar10,
    /// CIFAR-100's binary batches (the official split).
    Cifar100,
    /// One sub-folder per class; the test split in `test_path`.
    Folder,
    /// `path,label` lines with `classes`; the test split in `test_path`.
    Csv,
}

impl DataFormat {
    /// Whether the format has its own test split (otherwise `test_path` gives it).
    fn has_test_split(self) -> bool {
        !matches!(self, DataFormat::Folder | DataFormat::Csv)
    }
}

vprompt_core::config! {
    /// Where the images come from.
    pub struct DataConfig {
        /// How the dataset is stored.
        pub format: DataFormat,
        /// The dataset directory (or, for `csv`, the list file).
        pub path: PathBuf,
    }
    defaults {
        /// The test split for `folder` and `csv`.
        pub test_path: Option<PathBuf> = None,
        /// Class names for `csv` lists.
        pub classes: Option<Vec<String>> = None,
        /// Fraction of train held out for validation (selection; ties keep the earlier epoch). 0
        /// trains on all of it and keeps the last epoch's prompt, the released code's setting.
        pub validation: f64 = 0.1,
        /// Train on exactly N images per class (few-shot, the paper's N in {1, 2, 4, 8, 16}),
        /// sampled from the train split after the validation part is held out of it.
        pub few_shot: Option<usize> = None,
        /// Select on N validation images per class only (default: all of the held-out part, or
        /// N = the few-shot N in few-shot runs, so that a 1-shot run does not validate on 6000
        /// images).
        pub validation_per_class: Option<usize> = None,
        /// Evaluate on N test images per class only (quick runs).
        pub test_per_class: Option<usize> = None,
        /// Seed of the splits and samples.
        pub seed: u64 = 0,
        /// Leave unreadable image files out (counted) instead of failing.
        pub skip_unreadable: bool = false,
        /// Resize filter.
        pub filter: Filter = Filter::Bicubic,
        /// Resize the shorter side to this and centre-crop (default: stretch to the input size).
        pub center_crop_from: Option<usize> = None,
        /// Directory of the preprocessing cache (default: `<run_dir>/../.vprompt-cache`).
        pub cache_dir: Option<PathBuf> = None,
    }
}

vprompt_core::config! {
    /// The frozen model.
    pub struct BackboneConfig {}
    defaults {
        /// The preset (`vprompt import --help` lists them).
        pub preset: Preset = Preset::EfficientNetLite0,
        /// Its weights file; not needed for the embedded `efficientnet-lite0`.
        pub weights: Option<PathBuf> = None,
        /// CLIP: the text tower's preset (`clip-vit-b32-text`). With it the classes are scored by
        /// text prompts (the run's `text_template`) instead of a label mapping.
        pub text_preset: Option<Preset> = None,
        /// The text tower's weights file.
        pub text_weights: Option<PathBuf> = None,
        /// `[height, width]` of the images the backbone takes, when not the preset's (224 x 224):
        /// only the convolutional presets (EfficientNet, ResNets) run at other sizes, each side in
        /// 32..=1024. Data and prompt follow it.
        pub input_size: Option<[usize; 2]> = None,
    }
}

vprompt_core::config! {
    /// The training recipe and overrides of its settings.
    pub struct TrainingChoice {}
    defaults {
        /// The recipe.
        pub recipe: Recipe = Recipe::Paper,
        /// Epochs.
        pub epochs: Option<usize> = None,
        /// Batch size.
        pub batch_size: Option<usize> = None,
        /// Base learning rate.
        pub learning_rate: Option<f64> = None,
        /// Seed of the batch order.
        pub seed: Option<u64> = None,
        /// Validate every N epochs.
        pub eval_every: Option<usize> = None,
        /// The learning-rate schedule, e.g. `"CosinePerStep"` or `{WarmupCosine = {warmup = 100}}`.
        pub schedule: Option<ScheduleConfig> = None,
        /// A learned mapping's (`"FullyMap"`, `"LinearProbe"`) base learning rate; default: the
        /// prompt's.
        pub mapping_learning_rate: Option<f64> = None,
        /// An input-conditional prompt's generator's base learning rate; default: the prompt's.
        pub generator_learning_rate: Option<f64> = None,
    }
}

impl TrainingChoice {
    /// The effective training config: the recipe with the overrides applied, validated.
    pub fn config(&self) -> Result<TrainingConfig, ConfigError> {
        let mut c = self.recipe.config();
        c.epochs = self.epochs.unwrap_or(c.epochs);
        c.batch_size = self.batch_size.unwrap_or(c.batch_size);
        c.learning_rate = self.learning_rate.unwrap_or(c.learning_rate);
        c.seed = self.seed.unwrap_or(c.seed);
        c.eval_every = self.eval_every.unwrap_or(c.eval_every);
        c.schedule = self.schedule.clone().unwrap_or(c.schedule);
        c.mapping_learning_rate = self.mapping_learning_rate.or(c.mapping_learning_rate);
        c.generator_learning_rate = self.generator_learning_rate.or(c.generator_learning_rate);
        c.validate().map_err(|e| match e {
            vprompt::train::TrainError::InvalidConfig(e) => e,
            e => ConfigError::new("", e.to_string()),
        })?;
        Ok(c)
    }
}

vprompt_core::config! {
    /// A whole run.
    pub struct RunConfig {
        /// Where checkpoints, metrics and curves go.
        pub run_dir: PathBuf,
        /// The data.
        pub data: DataConfig,
    }
    defaults {
        /// The frozen model.
        pub backbone: BackboneConfig = BackboneConfig::new(),
        /// The prompt template, e.g. `{ Padding = { pad = 30 } }` (the paper's default).
        pub prompt: PromptConfig = PaddingPromptConfig::new(30).into(),
        /// The label mapping, e.g. `"FirstN"` (the paper's), `{ Iterative = { every = 1 } }`, or
        /// one learned with the prompt: `"FullyMap"` (a linear layer over the source outputs) or
        /// `"LinearProbe"` (over the penultimate features).
        pub mapping: LabelMappingConfig = LabelMappingConfig::FirstN,
        /// CLIP (a backbone with a `text_preset`): the text prompt, `{}` standing for the class
        /// name (default: the paper's "This is a photo of a {}").
        pub text_template: Option<String> = None,
        /// Recipe and overrides.
        pub training: TrainingChoice = TrainingChoice::new(),
        /// `vprompt black-box`: the model queried and the zeroth-order settings.
        pub black_box: Option<BlackBoxChoice> = None,
    }
}

/// The model `vprompt black-box` queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum BlackBoxSource {
    /// The run's own backbone and mapping, used only through queries.
    Local,
    /// A program and its arguments answering the line protocol (`docs/black-box.md`).
    Command(Vec<String>),
    /// An HTTP endpoint taking the protocol's JSON.
    Http(String),
}

vprompt_core::config! {
    /// Black-box training from the command line: what is queried, the zeroth-order optimiser,
    /// and how a remote model is called. A remote model takes the backbone section's input size
    /// and scores the data's classes.
    pub struct BlackBoxChoice {
        /// What is queried.
        pub model: BlackBoxSource,
        /// The zeroth-order optimiser, e.g. `{ SpsaGc = { draws = 5, a = 0.01, c = 0.01, o = 0.0,
        /// alpha = 0.6, gamma = 0.1, momentum = 0.9 } }`.
        pub optimizer: ZerothOrderConfig,
    }
    defaults {
        /// Epochs over the training split.
        pub epochs: usize = 5,
        /// Images per step.
        pub batch_size: usize = 32,
        /// Seed of the batch order and the perturbations.
        pub seed: u64 = 0,
        /// Most training queries (images sent) the run may spend.
        pub query_budget: Option<u64> = None,
        /// Most images per call to the model.
        pub query_batch: usize = 256,
        /// What a remote model returns: `"Logits"` or `"Probabilities"`.
        pub scores: Scores = Scores::Logits,
        /// Retries of a query that failed transiently (a dropped connection, a timeout, HTTP 429
        /// or 5xx, a program that exited).
        pub retries: u32 = 3,
        /// The wait before the first retry in milliseconds, doubled before each further one.
        pub backoff_ms: u64 = 200,
        /// How long one attempt may take, in seconds.
        pub timeout_s: f64 = 60.0,
    }
}

impl BlackBoxChoice {
    /// The trainer's config.
    pub fn config(&self) -> BlackBoxConfig {
        BlackBoxConfig::new(self.epochs, self.optimizer.clone())
            .with_batch_size(self.batch_size)
            .with_seed(self.seed)
            .with_query_budget(self.query_budget)
            .with_query_batch(self.query_batch)
    }

    /// Checks the settings; errors name the key under `black_box`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config().validate().map_err(|e| match e {
            vprompt::train::TrainError::InvalidConfig(e) => e.within("black_box"),
            e => ConfigError::new("black_box", e.to_string()),
        })?;
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(ConfigError::new(
                "black_box.timeout_s",
                format!("must be positive, got {}", self.timeout_s),
            ));
        }
        match &self.model {
            BlackBoxSource::Command(argv) if argv.is_empty() => {
                Err(ConfigError::new("black_box.model.Command", "names no program"))
            }
            BlackBoxSource::Http(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                Err(ConfigError::new(
                    "black_box.model.Http",
                    format!("`{url}` is not an http:// or https:// URL"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// How a remote model's queries are retried.
    pub fn retry(&self) -> Retry {
        Retry {
            retries: self.retries,
            backoff: Duration::from_millis(self.backoff_ms),
            timeout: Duration::from_secs_f64(self.timeout_s),
        }
    }
}

/// What `vprompt black-box` did.
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

/// The prepared splits of a run.
#[derive(Debug, Clone)]
pub struct PreparedSplits {
    /// Training part of the train split.
    pub train: Arc<PreparedDataset>,
    /// Validation part, for selection; `None` with `data.validation = 0`.
    pub valid: Option<Arc<PreparedDataset>>,
    /// The test split, evaluated once at the end.
    pub test: Arc<PreparedDataset>,
    /// What the three were prepared from.
    pub fingerprints: DataFingerprints,
}

/// Hashes of every pixel, label and class name of each split and of the preprocessing
/// (`vprompt::data::cache_key`), recorded in a run directory's `data.json`: a resumed run or an
/// evaluation on other data (changed files, another version of the dataset) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprints {
    /// The training part.
    pub train: u64,
    /// The validation part (0 without one).
    pub valid: u64,
    /// The test split.
    pub test: u64,
    /// The backbone's weights file and the text tower's (content hashes; `None` for the
    /// embedded weights, a hub name, whose revision pins them, or runs recorded before these were).
    #[serde(default)]
    pub weights: Option<u64>,
    /// The text tower's weights file.
    #[serde(default)]
    pub text_weights: Option<u64>,
}

/// The content hash of a weights file given by path (`None` for a hub name or no file).
fn weights_fingerprint(weights: Option<&Path>) -> anyhow::Result<Option<u64>> {
    match weights {
        Some(path) if !path.to_str().is_some_and(|s| s.starts_with("hf:")) => Ok(Some(
            vprompt_core::fingerprint::file(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )),
        _ => Ok(None),
    }
}

/// A finished (or interrupted) training run.
pub struct TrainedRun {
    /// The selected classifier and the records.
    pub trained: Trained<ImageBackbone>,
    /// The prepared splits (the test split is not used by training).
    pub data: PreparedSplits,
    /// The effective training config it ran with.
    pub training: TrainingConfig,
}

/// The run config's file in a run directory.
const RUN_FILE: &str = "run.json";
/// The class names in a run directory, one per line.
const CLASSES_FILE: &str = "classes.txt";
/// The data fingerprints, in a run directory.
const DATA_FILE: &str = "data.json";

/// Refuses weights files whose content differs from what the run recorded.
fn check_same_weights(dir: &Path, recorded: &DataFingerprints, now: &DataFingerprints) -> anyhow::Result<()> {
    for (what, then, now) in [
        ("backbone.weights", recorded.weights, now.weights),
        ("backbone.text_weights", recorded.text_weights, now.text_weights),
    ] {
        if let (Some(then), Some(now)) = (then, now)
            && then != now
        {
            anyhow::bail!(
                "{}: the file {what} names has changed since the run was trained; use a new run_dir, \
                 or --fresh to start this one again",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The data fingerprints a run recorded (`None` for runs made before they were).
fn recorded_fingerprints(dir: &Path) -> anyhow::Result<Option<DataFingerprints>> {
    let path = dir.join(DATA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl RunConfig {
    /// The `[height, width]` the backbone takes: `backbone.input_size`, or the preset's.
    pub fn input_size(&self) -> Result<[usize; 2], ConfigError> {
        let preset = self.backbone.preset;
        let size = self.backbone.input_size.unwrap_or(preset.input_size());
        preset
            .check_input_size(size)
            .map_err(|e| ConfigError::new("backbone.input_size", e.to_string()))?;
        Ok(size)
    }

    /// Whether the classes are scored by a CLIP text tower rather than a label mapping.
    pub fn is_clip(&self) -> bool {
        self.backbone.text_preset.is_some()
    }

    /// Checks everything that can be checked without reading data or weights; with `prompted`,
    /// also the prompt against the input size. An error names the key.
    pub fn validate(&self, prompted: bool) -> Result<(), ConfigError> {
        let (b, d) = (&self.backbone, &self.data);
        if b.preset.modality() != Modality::Image {
            return Err(ConfigError::new(
                "backbone.preset",
                format!("`{}` is a text tower, not an image backbone", b.preset),
            ));
        }
        let size = self.input_size()?;
        if let Some(black_box) = &self.black_box {
            black_box.validate()?;
        }
        if prompted {
            self.prompt
                .validate(size)
                .map_err(|e| ConfigError::new("prompt", e.to_string()))?;
        } else if self.mapping.is_learned() {
            return Err(ConfigError::new(
                "mapping",
                format!(
                    "`{}` is learned together with a prompt; a run without one cannot use it",
                    self.mapping.method()
                ),
            ));
        }
        self.training_config().map_err(|e| e.within("training"))?;
        match (b.text_preset, &b.text_weights) {
            (Some(p), Some(_)) if p.modality() != Modality::Text => {
                return Err(ConfigError::new(
                    "backbone.text_preset",
                    format!("`{p}` is not a text tower"),
                ));
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "backbone.text_weights",
                    "backbone.text_preset needs the text tower's weights",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "backbone.text_preset",
                    "backbone.text_weights needs the text tower's preset",
                ));
            }
            (None, None) if self.text_template.is_some() => {
                return Err(ConfigError::new(
                    "text_template",
                    "needs a CLIP text tower (backbone.text_preset and text_weights)",
                ));
            }
            _ => {}
        }
        if let Some(t) = &self.text_template
            && !t.contains("{}")
        {
            return Err(ConfigError::new(
                "text_template",
                format!("`{t}` has no `{{}}` for the class name"),
            ));
        }
        for (key, value) in [
            ("data.few_shot", d.few_shot),
            ("data.validation_per_class", d.validation_per_class),
            ("data.test_per_class", d.test_per_class),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(
                    key,
                    "must be at least 1 image per class (or left out for all)",
                ));
            }
        }
        if !(d.validation >= 0.0 && d.validation < 1.0) {
            return Err(ConfigError::new(
                "data.validation",
                format!("must be in [0, 1), got {}", d.validation),
            ));
        }
        if d.validation == 0.0 && d.validation_per_class.is_some() {
            return Err(ConfigError::new(
                "data.validation_per_class",
                "there is no validation split with data.validation = 0",
            ));
        }
        if !d.format.has_test_split() && d.test_path.is_none() {
            return Err(ConfigError::new(
                "data.test_path",
                "a `folder` or `csv` dataset needs the test split's path",
            ));
        }
        if d.format == DataFormat::Csv && d.classes.is_none() {
            return Err(ConfigError::new(
                "data.classes",
                "a `csv` list needs the class names",
            ));
        }
        Ok(())
    }

    /// The effective training config: the recipe with the overrides, and the mapping the trainer
    /// makes (one fitted and refitted on the data: FLM, ILM, BLM; or one learned with the prompt),
    /// if the run has one (never with CLIP, whose text head is the mapping).
    pub fn training_config(&self) -> Result<TrainingConfig, ConfigError> {
        Ok(self.training.config()?.with_mapping(self.mapping_to_fit()))
    }

    /// The mapping that the trainer fits on the data or learns, if any.
    fn mapping_to_fit(&self) -> Option<LabelMappingConfig> {
        ((self.mapping.needs_fit() || self.mapping.is_learned()) && !self.is_clip())
            .then(|| self.mapping.clone())
    }

    /// Loads the frozen backbone on `device`.
    pub fn backbone(&self, device: &Device) -> anyhow::Result<ImageBackbone> {
        let preset = self.backbone.preset;
        let backbone = match (&self.backbone.weights, preset) {
            (None, Preset::EfficientNetLite0) => ImageBackbone::efficientnet_lite0(device)?,
            (Some(path), preset) => ImageBackbone::load(preset, path, device)?,
            (None, preset) => ImageBackbone::load(preset, format!("{preset}.bpk"), device)?,
        };
        Ok(backbone.with_input_size(self.input_size()?)?)
    }

    /// The class head for `classes` before training: the CLIP text head when the backbone has a
    /// text tower (computed once here), else the label mapping (`FirstN` standing in for a mapping
    /// that the trainer fits on the data or learns).
    pub fn head(
        &self,
        backbone: &ImageBackbone,
        classes: &[String],
        device: &Device,
    ) -> anyhow::Result<Mapping> {
        if let (Some(preset), Some(weights)) = (self.backbone.text_preset, &self.backbone.text_weights) {
            let text = TextEncoder::load(preset, weights, device)?;
            let template = self.text_template.as_deref().unwrap_or(PAPER_TEMPLATE);
            return Ok(
                clip_head(classes, &[template.to_string()], 32, device, |t| text.forward(t))?
                    .with_scale(text.logit_scale())?,
            );
        }
        let config = match self.mapping_to_fit() {
            // The learned mapping itself (the trainer draws the same one from the same seed):
            // first-N could not stand in where there are more classes than source outputs.
            Some(learned) if learned.is_learned() => {
                let seed = self.training_config()?.seed;
                return Ok(init_mapping(&learned, backbone, classes.len(), seed, device)?);
            }
            Some(_) => LabelMappingConfig::FirstN,
            None => self.mapping.clone(),
        };
        Ok(config.init(backbone.output_dim(), classes.len(), device)?)
    }

    fn read(&self) -> anyhow::Result<Splits> {
        let d = &self.data;
        let on_error = if d.skip_unreadable {
            OnError::Skip
        } else {
            OnError::Fail
        };
        let test_path = || d.test_path.clone().context("data.test_path is required");
        Ok(match d.format {
            DataFormat::FashionMnist => fashion_mnist(&d.path)?,
            DataFormat::Mnist => mnist(&d.path)?,
            DataFormat::Cifar10 => cifar10(&d.path)?,
            DataFormat::Cifar100 => cifar100(&d.path)?,
            DataFormat::Folder => Splits::new(
                image_folder(&d.path, on_error)?,
                image_folder(test_path()?, on_error)?,
            )?,
            DataFormat::Csv => {
                let classes = d.classes.clone().context("data.classes is required")?;
                let root = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
                let test = test_path()?;
                Splits::new(
                    csv_list(&d.path, root(&d.path), &classes, on_error)?,
                    csv_list(&test, root(&test), &classes, on_error)?,
                )?
            }
        })
    }

    /// Reads, splits and prepares the data at `size` (cached on disk), reporting to `progress`.
    pub fn prepare_data(&self, size: [usize; 2], progress: &dyn Progress) -> anyhow::Result<PreparedSplits> {
        let d = &self.data;
        let splits = self.read()?;
        // `validation = 0`: the whole training split trains, nothing is held out.
        let (pool, valid) = if d.validation == 0.0 {
            (splits.train, None)
        } else {
            let (pool, valid) = splits.train.split_validation(d.validation, d.seed)?;
            (pool, Some(valid))
        };
        let train = match d.few_shot {
            Some(n) => pool.few_shot(n, d.seed)?,
            None => pool,
        };
        let valid = match (valid, d.validation_per_class.or(d.few_shot)) {
            (Some(valid), Some(n)) => Some(valid.few_shot(n, d.seed)?),
            (valid, _) => valid,
        };
        let test = match d.test_per_class {
            Some(n) => splits.test.few_shot(n, d.seed)?,
            None => splits.test,
        };
        let preprocess = Preprocess {
            size,
            filter: d.filter,
            fit: d
                .center_crop_from
                .map_or(Fit::Stretch, |s| Fit::CenterCrop { shorter_side: s }),
        };
        let cache = d.cache_dir.clone().unwrap_or_else(|| {
            self.run_dir
                .parent()
                .unwrap_or(Path::new("."))
                .join(".vprompt-cache")
        });
        let prepare = |name: &str, data: &Dataset| -> anyhow::Result<Arc<PreparedDataset>> {
            let mut task = progress.task(&format!("preparing {name}"), data.len() as u64, "images");
            Ok(Arc::new(
                prepare_cached_with(data, &preprocess, &cache, task.as_mut())?.0,
            ))
        };
        let fingerprints = DataFingerprints {
            train: cache_key(&train, &preprocess),
            valid: valid.as_ref().map_or(0, |v| cache_key(v, &preprocess)),
            test: cache_key(&test, &preprocess),
            weights: weights_fingerprint(self.backbone.weights.as_deref())?,
            text_weights: weights_fingerprint(self.backbone.text_weights.as_deref())?,
        };
        Ok(PreparedSplits {
            train: prepare("training split", &train)?,
            valid: valid
                .as_ref()
                .map(|v| prepare("validation split", v))
                .transpose()?,
            test: prepare("test split", &test)?,
            fingerprints,
        })
    }

    /// Trains on `devices` (the first is the main one; more split each batch: data parallel):
    /// loads the backbone and data, builds the prompt and head, runs the trainer (resuming from the
    /// run directory's checkpoint if there is one), writes the config and the class names beside
    /// it.
    pub fn train(&self, devices: &[Device], progress: Arc<dyn Progress>) -> anyhow::Result<TrainedRun> {
        let device = devices.first().context("no device to train on")?;
        self.validate(true)?;
        let training = self.training_config()?;
        let backbone = self.backbone(device)?;
        let prompt = self.prompt.init(backbone.input_size(), device)?;
        let data = self.prepare_data(prompt.input_size(), progress.as_ref())?;
        let head = self.head(&backbone, &data.train.classes, device)?;
        let classifier = PromptedClassifier::new(prompt, backbone, head)?;
        self.record_run(&data)?;
        let trainer = Trainer::new(training.clone(), device)
            .with_devices(devices)?
            .with_run_dir(&self.run_dir)
            .with_progress(progress);
        let trained = match &data.valid {
            Some(valid) => trainer.train(classifier, data.train.clone(), valid.clone())?,
            None => trainer.train_without_validation(classifier, data.train.clone())?,
        };
        Ok(TrainedRun {
            trained,
            data,
            training,
        })
    }

    /// Checks that the run directory holds this run or none, then records the run's config,
    /// classes and data fingerprints in it.
    fn record_run(&self, data: &PreparedSplits) -> anyhow::Result<()> {
        self.check_same_run(&data.train.classes, &data.fingerprints)?;
        std::fs::create_dir_all(&self.run_dir)
            .with_context(|| format!("cannot create {}", self.run_dir.display()))?;
        write(
            &self.run_dir.join(CLASSES_FILE),
            &(data.train.classes.join("\n") + "\n"),
        )?;
        write(
            &self.run_dir.join(RUN_FILE),
            &serde_json::to_string_pretty(self).expect("run configs serialise"),
        )?;
        write(
            &self.run_dir.join(DATA_FILE),
            &serde_json::to_string_pretty(&data.fingerprints).expect("fingerprints serialise"),
        )
    }

    /// Trains the prompt by queries alone (the `black_box` section), selects it on the validation
    /// split and evaluates it on the test split through the same model, every query counted.
    pub fn train_black_box(
        &self,
        device: &Device,
        progress: Arc<dyn Progress>,
    ) -> anyhow::Result<BlackBoxRun> {
        self.validate(true)?;
        let choice = self
            .black_box
            .as_ref()
            .context("the run config has no [black_box] section")?;
        let size = self.input_size()?;
        let prompt = self.prompt.init(size, device)?;
        let data = self.prepare_data(prompt.input_size(), progress.as_ref())?;
        let valid = data
            .valid
            .clone()
            .context("black-box training selects on a validation split: set data.validation > 0")?;
        let classes = data.train.classes.len();
        let (mut remote, mut local) = (None, None);
        let model: &mut dyn vprompt::train::BlackBoxModel = match &choice.model {
            BlackBoxSource::Local => {
                let backbone = self.backbone(device)?;
                let head = self.head(&backbone, &data.train.classes, device)?;
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
        self.record_run(&data)?;
        let trained = Trainer::new(choice.config(), device)
            .with_run_dir(&self.run_dir)
            .with_progress(progress)
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

    /// Before anything is written: a run directory that holds a run already is resumed only by
    /// the identical run config and classes; anything else is refused with the settings that
    /// differ (a prompt of another size or other data would otherwise "resume" the old run and
    /// report its prompt).
    fn check_same_run(&self, classes: &[String], data: &DataFingerprints) -> anyhow::Result<()> {
        if !self.run_dir.join(RUN_FILE).exists() {
            if self.run_dir.join("checkpoint.json").exists() || self.run_dir.join("checkpoints").exists() {
                anyhow::bail!(
                    "{} holds checkpoints but no {RUN_FILE}: it is not a run this tool can resume; \
                     use a new run_dir (or remove this one)",
                    self.run_dir.display()
                );
            }
            return Ok(());
        }
        // Read typed, so that settings added since it was written compare as their defaults.
        let old = Self::from_run_dir(&self.run_dir).context("use a new run_dir")?;
        let mut old = serde_json::to_value(old).expect("run configs serialise");
        let mut new = serde_json::to_value(self).expect("run configs serialise");
        // Where the directory is named from (relative, absolute, moved) is not a setting.
        for config in [&mut old, &mut new] {
            if let Some(map) = config.as_object_mut() {
                map.remove("run_dir");
            }
        }
        let mut differences = Vec::new();
        json_differences(&old, &new, String::new(), &mut differences);
        if !differences.is_empty() {
            anyhow::bail!(
                "{} holds another run ({}); use a new run_dir, or the same settings to resume it",
                self.run_dir.display(),
                differences.join("; ")
            );
        }
        if let Ok(recorded) = class_names(&self.run_dir)
            && recorded != classes
        {
            anyhow::bail!(
                "{} was trained on the classes {recorded:?}, the data now has {classes:?}; use a new run_dir",
                self.run_dir.display()
            );
        }
        if let Some(recorded) = recorded_fingerprints(&self.run_dir)? {
            if (recorded.train, recorded.valid) != (data.train, data.valid) {
                anyhow::bail!(
                    "{} was trained on other data: the same settings now read other images or labels \
                     (changed files?); use a new run_dir, or --fresh to start this one again",
                    self.run_dir.display()
                );
            }
            check_same_weights(&self.run_dir, &recorded, data)?;
        }
        Ok(())
    }

    /// Deletes the run in `run_dir` (for `--fresh`): only a directory that holds a run's files
    /// (`run.json` or a checkpoint) is deleted; any other non-empty directory is refused.
    pub fn remove_run(&self) -> anyhow::Result<()> {
        let dir = &self.run_dir;
        let Ok(mut entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let is_run = dir.join(RUN_FILE).exists() || dir.join("checkpoint.json").exists();
        if !is_run && entries.next().is_some() {
            anyhow::bail!(
                "--fresh would delete {}, which holds files but no run; choose another run_dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot delete {}", dir.display()))
    }

    /// Reads the config a training run wrote to its directory.
    pub fn from_run_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(RUN_FILE);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a run config", path.display()))
    }
}

/// The leaf settings where `old` and `new` differ, as `key.path: old -> new`.
fn json_differences(old: &serde_json::Value, new: &serde_json::Value, at: String, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                json_differences(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    path,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{at}: {a} -> {b}")),
        _ => {}
    }
}

/// Writes through a temporary file and a rename: a run killed meanwhile leaves the old file or
/// the new one, never half of one (a half `run.json` would make the run unresumable).
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The class names a training run recorded.
pub fn class_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join(CLASSES_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().map(String::from).collect())
}

/// A finished (or interrupted) run's config and its selected classifier.
pub fn load_run(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<(RunConfig, PromptedClassifier<ImageBackbone>)> {
    let config = RunConfig::from_run_dir(dir)?;
    let (prompt, mapping) = RunDir::create(dir)?.load_best(device)?.with_context(|| {
        format!(
            "{} has no selected prompt yet (train at least one epoch)",
            dir.display()
        )
    })?;
    let mapping =
        mapping.with_context(|| format!("{} holds no mapping (a black-box run?)", dir.display()))?;
    let classifier = PromptedClassifier::new(prompt, config.backbone(device)?, mapping)?;
    Ok((config, classifier))
}

/// Refuses data (or weights) other than the ones the run in `dir` recorded.
fn check_recorded_data(dir: &Path, config: &RunConfig, data: &PreparedSplits) -> anyhow::Result<()> {
    if let Some(recorded) = recorded_fingerprints(dir)? {
        if recorded.test != data.fingerprints.test {
            anyhow::bail!(
                "the test split {} reads now is not the one this run recorded ({}; changed \
                 files?): its accuracy would not be this run's",
                config.data.path.display(),
                dir.display()
            );
        }
        check_same_weights(dir, &recorded, &data.fingerprints)?;
    }
    Ok(())
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

/// Combines the selected prompts of several runs (the same data and backbone, any templates,
/// mappings and seeds) into an [`Ensemble`] and evaluates it, and each member, on their test split.
pub fn evaluate_ensemble(
    dirs: &[PathBuf],
    device: &Device,
    progress: &dyn Progress,
) -> anyhow::Result<EvaluatedEnsemble> {
    let mut members = Vec::with_capacity(dirs.len());
    let mut first: Option<RunConfig> = None;
    for dir in dirs {
        let (config, classifier) = load_run(dir, device)?;
        if let Some(first) = &first {
            if config.data != first.data || config.backbone != first.backbone {
                anyhow::bail!(
                    "{} trained on other data or another backbone than {}: an ensemble's members \
                     share both",
                    dir.display(),
                    dirs[0].display()
                );
            }
        } else {
            first = Some(config);
        }
        members.push(classifier);
    }
    let config = first.context("an ensemble needs at least one run")?;
    let ensemble = Ensemble::new(members)?;
    let data = config.prepare_data(ensemble.input_size(), progress)?;
    for dir in dirs {
        check_recorded_data(dir, &config, &data)?;
    }
    let loader = vprompt::data::BatchLoader::new(data.test.clone(), config.training_config()?.batch_size)?;
    let mut task = progress.task("test, ensemble", data.test.len() as u64, "images");
    Ok(EvaluatedEnsemble {
        result: ensemble.evaluate_with(&loader, device, task.as_mut())?,
        classes: data.test.classes.clone(),
        train_images: data.train.len(),
    })
}

/// Evaluates the selected prompt of a finished (or interrupted) run on its test split.
pub fn evaluate_run(dir: &Path, device: &Device, progress: &dyn Progress) -> anyhow::Result<Report> {
    let (config, classifier) = load_run(dir, device)?;
    let data = config.prepare_data(classifier.input_size(), progress)?;
    check_recorded_data(dir, &config, &data)?;
    let batch = config.training_config()?.batch_size;
    let loader = vprompt::data::BatchLoader::new(data.test.clone(), batch)?;
    let pass = |label: &str, prompted: bool| {
        let mut task = progress.task(label, data.test.len() as u64, "images");
        evaluate_with(&classifier, &loader, device, prompted, task.as_mut())
    };
    Ok(Report {
        classes: data.test.classes.clone(),
        prompted: pass("test, prompted", true)?,
        unprompted: pass("test, unprompted", false)?,
    })
}
