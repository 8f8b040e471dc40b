//! [`RunConfig`]: a whole visual-prompting run described by one config (what `vprompt train
//! --config run.toml` reads): data, backbone, prompt, mapping, training recipe, run directory. Every field has a
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

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vprompt_backbone::{Modality, Preset};
use vprompt_data::Filter;
use vprompt_mapping::LabelMappingConfig;
use vprompt_prompt::{PaddingPromptConfig, PromptConfig};
use vprompt_train::{
    BlackBoxConfig, ConfigError, LinearProbeConfig, OptimizerConfig, Recipe, ScheduleConfig, Scores,
    TrainError, TrainingConfig, ZerothOrderConfig,
};

use crate::remote::Retry;

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
    pub(crate) fn has_test_split(self) -> bool {
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
        /// in few-shot runs the few-shot N, at most what the held-out part has of its smallest
        /// class, so that a 1-shot run does not validate on 6000 images).
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
        /// The optimiser, e.g. `{ Sgd = { momentum = 0.9, dampening = 0.0, weight_decay = 0.0 } }`,
        /// `{ Adam = { beta1 = 0.9, beta2 = 0.999, weight_decay = 0.0 } }` or
        /// `"NormalizedGradient"`; default: the recipe's.
        pub optimizer: Option<OptimizerConfig> = None,
        /// Plain-line progress: a line every this many steps.
        pub log_every: Option<u64> = None,
        /// Training stops when a prompt value's magnitude passes this after an epoch.
        pub divergence_limit: Option<f64> = None,
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
        c.optimizer = self.optimizer.clone().unwrap_or(c.optimizer);
        c.log_every = self.log_every.unwrap_or(c.log_every);
        c.divergence_limit = self.divergence_limit.unwrap_or(c.divergence_limit);
        c.validate().map_err(|e| match e {
            TrainError::InvalidConfig(e) => e,
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
        /// How the run learns, and its settings: `[method.VisualPrompt]` (the default: the paper's
        /// recipe), `[method.BlackBox]`, `[method.LinearProbe]` or `method = "Unprompted"`.
        pub method: MethodConfig = MethodConfig::default(),
    }
}

/// How a run learns: the one switch between the ways of training, each with its own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum MethodConfig {
    /// A visual prompt trained by gradient steps through the backbone: a recipe and its
    /// overrides.
    VisualPrompt(TrainingChoice),
    /// A visual prompt trained by queries alone (zeroth-order), through the run's own model, a
    /// program or an HTTP endpoint, every query counted.
    BlackBox(BlackBoxChoice),
    /// A linear classifier on the frozen backbone's features, without a prompt (the paper's
    /// linear-probe baseline).
    LinearProbe(ProbeChoice),
    /// No training: the frozen backbone and its head as they are (a mapping made without data,
    /// one fitted on the training split, or CLIP's text-prompt zero-shot head).
    Unprompted,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self::VisualPrompt(TrainingChoice::new())
    }
}

impl MethodConfig {
    /// Its name in messages and records: `visual-prompt`, `black-box`, `linear-probe`,
    /// `unprompted`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::VisualPrompt(_) => "visual-prompt",
            Self::BlackBox(_) => "black-box",
            Self::LinearProbe(_) => "linear-probe",
            Self::Unprompted => "unprompted",
        }
    }

    /// Whether the run learns a prompt.
    pub fn is_prompted(&self) -> bool {
        matches!(self, Self::VisualPrompt(_) | Self::BlackBox(_))
    }

    /// The key path of its settings in a run config (`method.VisualPrompt`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::VisualPrompt(_) => "method.VisualPrompt",
            Self::BlackBox(_) => "method.BlackBox",
            Self::LinearProbe(_) => "method.LinearProbe",
            Self::Unprompted => "method",
        }
    }
}

vprompt_core::config! {
    /// Linear-probe settings (defaults: [`LinearProbeConfig`]'s).
    pub struct ProbeChoice {}
    defaults {
        /// Seed of the batch order and the layer's initialisation (default: the probe's).
        pub seed: Option<u64> = None,
        /// Epochs over the cached features.
        pub epochs: Option<usize> = None,
        /// Adam learning rate.
        pub learning_rate: Option<f64> = None,
        /// Features per batch.
        pub batch_size: Option<usize> = None,
        /// Plain-line progress: a line every this many steps (0: only per epoch).
        pub log_every: Option<u64> = None,
    }
}

impl ProbeChoice {
    /// The trainer's config: the defaults with these overrides.
    pub fn config(&self) -> LinearProbeConfig {
        let mut c = LinearProbeConfig::new();
        if let Some(seed) = self.seed {
            c = c.with_seed(seed);
        }
        if let Some(e) = self.epochs {
            c = c.with_epochs(e);
        }
        if let Some(lr) = self.learning_rate {
            c = c.with_learning_rate(lr);
        }
        if let Some(b) = self.batch_size {
            c = c.with_batch_size(b);
        }
        if let Some(l) = self.log_every {
            c = c.with_log_every(l);
        }
        c
    }
}

/// The model a black-box run queries.
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
        /// Validate every N epochs (and after the last).
        pub eval_every: usize = 1,
        /// Plain-line progress: a line every this many steps.
        pub log_every: u64 = 10,
        /// Training stops when a prompt value's magnitude passes this after an epoch.
        pub divergence_limit: f64 = 1000.0,
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
            .with_eval_every(self.eval_every)
            .with_log_every(self.log_every)
            .with_divergence_limit(self.divergence_limit)
    }

    /// Checks the settings; errors name the key within these settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config().validate().map_err(|e| match e {
            TrainError::InvalidConfig(e) => e,
            e => ConfigError::new("", e.to_string()),
        })?;
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(ConfigError::new(
                "timeout_s",
                format!("must be positive, got {}", self.timeout_s),
            ));
        }
        match &self.model {
            BlackBoxSource::Command(argv) if argv.is_empty() => {
                Err(ConfigError::new("model.Command", "names no program"))
            }
            BlackBoxSource::Http(url) if !(url.starts_with("http://") || url.starts_with("https://")) => Err(
                ConfigError::new("model.Http", format!("`{url}` is not an http:// or https:// URL")),
            ),
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

    /// Checks everything that can be checked without reading data or weights (for a prompted
    /// method, the prompt against the input size too). An error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prompted = self.method.is_prompted();
        let (b, d) = (&self.backbone, &self.data);
        if b.preset.modality() != Modality::Image {
            return Err(ConfigError::new(
                "backbone.preset",
                format!("`{}` is a text tower, not an image backbone", b.preset),
            ));
        }
        let size = self.input_size()?;
        match &self.method {
            MethodConfig::VisualPrompt(_) => {
                self.training_config().map_err(|e| e.within(self.method.key()))?;
            }
            MethodConfig::BlackBox(choice) => {
                choice.validate().map_err(|e| e.within(self.method.key()))?;
                if choice.model == BlackBoxSource::Local
                    && !self.is_clip()
                    && (self.mapping.needs_fit() || self.mapping.is_learned())
                {
                    return Err(ConfigError::new(
                        "mapping",
                        format!(
                            "a black box's head is fixed: `{}` is fitted on data or learned, which \
                             queries alone cannot do; use first-N, random or manual",
                            self.mapping.method()
                        ),
                    ));
                }
            }
            MethodConfig::LinearProbe(choice) => {
                choice.config().validate().map_err(|e| match e {
                    TrainError::InvalidConfig(e) => e.within(self.method.key()),
                    e => ConfigError::new(self.method.key(), e.to_string()),
                })?;
            }
            MethodConfig::Unprompted => {}
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

    /// The effective training config of a visual-prompt run: the recipe with the overrides, and
    /// the mapping the trainer makes (one fitted and refitted on the data: FLM, ILM, BLM; or one
    /// learned with the prompt), if the run has one (never with CLIP, whose text head is the
    /// mapping). For the other methods, the default recipe's, with the mapping fitted on the data
    /// (what an unprompted run fits).
    pub fn training_config(&self) -> Result<TrainingConfig, ConfigError> {
        let choice = match &self.method {
            MethodConfig::VisualPrompt(choice) => choice.clone(),
            _ => TrainingChoice::new(),
        };
        Ok(choice.config()?.with_mapping(self.mapping_to_fit()))
    }

    /// How many images one evaluation batch holds: the method's batch size.
    pub fn batch_size(&self) -> usize {
        match &self.method {
            MethodConfig::VisualPrompt(_) | MethodConfig::Unprompted => {
                self.training_config().map_or(32, |c| c.batch_size)
            }
            MethodConfig::BlackBox(choice) => choice.batch_size,
            MethodConfig::LinearProbe(choice) => choice.config().batch_size,
        }
    }

    /// The run's seed: of the batch order (and, for a learned mapping, its initialisation).
    pub fn seed(&self) -> u64 {
        match &self.method {
            MethodConfig::VisualPrompt(_) | MethodConfig::Unprompted => {
                self.training_config().map_or(0, |c| c.seed)
            }
            MethodConfig::BlackBox(choice) => choice.seed,
            MethodConfig::LinearProbe(choice) => choice.config().seed,
        }
    }

    /// The mapping that the trainer fits on the data or learns, if any.
    pub(crate) fn mapping_to_fit(&self) -> Option<LabelMappingConfig> {
        ((self.mapping.needs_fit() || self.mapping.is_learned()) && !self.is_clip())
            .then(|| self.mapping.clone())
    }
}
