//! A whole visual-prompting run described by one config (what `vprompt train --config run.toml`
//! reads): data, backbone, prompt, mapping, training recipe, run directory. Every field has a
//! default except the data; the effective config is written to the run directory.
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

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_backbone::{Backbone, ImageBackbone, Preset, TextEncoder};
use vprompt_data::{
    Dataset, Filter, Fit, OnError, PreparedDataset, Preprocess, Splits, cifar10, cifar100, csv_list,
    fashion_mnist, image_folder, mnist, prepare_cached,
};
use vprompt_mapping::{LabelMappingConfig, Mapping, PAPER_TEMPLATE, clip_head};
use vprompt_prompt::{PaddingPromptConfig, PromptConfig, VisualPrompt};
use vprompt_train::{PromptedClassifier, Report, ScheduleConfig, Trained, Trainer, TrainingConfig};

use crate::{Error, Result};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist`, `mnist`, `cifar10`, `cifar100` (directories with the official split), or
    /// `folder` (one sub-folder per class) / `csv` (`path,label` lines; with `classes`), which need
    /// `test_path` for a test split.
    pub format: String,
    /// The dataset directory (or, for `csv`, the list file).
    pub path: PathBuf,
    /// The test split for `folder` and `csv`.
    #[serde(default)]
    pub test_path: Option<PathBuf>,
    /// Class names for `csv` lists.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Fraction of train held out for validation (selection).
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// Train on exactly N images per class (few-shot, the paper's N in {1, 2, 4, 8, 16}), sampled from
    /// the train split after the validation part is held out of it.
    #[serde(default)]
    pub few_shot: Option<usize>,
    /// Select on N validation images per class only (default: all of the held-out part, or N = the
    /// few-shot N in few-shot runs, so that a 1-shot run does not validate on 6000 images).
    #[serde(default)]
    pub validation_per_class: Option<usize>,
    /// Evaluate on N test images per class only (quick runs).
    #[serde(default)]
    pub test_per_class: Option<usize>,
    /// Seed of the splits and samples.
    #[serde(default)]
    pub seed: u64,
    /// Leave unreadable image files out (counted) instead of failing.
    #[serde(default)]
    pub skip_unreadable: bool,
    /// Resize filter: `bicubic` (default), `bilinear`, `nearest`.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Resize the shorter side to this and centre-crop (default: stretch to the input size).
    #[serde(default)]
    pub center_crop_from: Option<usize>,
    /// Directory of the preprocessing cache (default: `<run_dir>/../.vprompt-cache`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_validation() -> f64 {
    0.1
}

fn default_filter() -> String {
    "bicubic".into()
}

/// The frozen model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// A preset name (`vprompt import --help` lists them).
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Its weights file; not needed for the embedded `efficientnet-lite0`.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// CLIP: the text tower's preset (`clip-vit-b32-text`). With it the classes are scored by text
    /// prompts (the run's `text_template`) instead of a label mapping.
    #[serde(default)]
    pub text_preset: Option<String>,
    /// The text tower's weights file.
    #[serde(default)]
    pub text_weights: Option<PathBuf>,
    /// `[height, width]` of the images the backbone takes, when not the preset's (224 x 224): only
    /// the convolutional presets (EfficientNet, ResNets) run at other sizes, each side in
    /// 32..=1024. Data and prompt follow it.
    #[serde(default)]
    pub input_size: Option<[usize; 2]>,
}

fn default_preset() -> String {
    Preset::EfficientNetLite0.name().into()
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            preset: default_preset(),
            weights: None,
            text_preset: None,
            text_weights: None,
            input_size: None,
        }
    }
}

/// The training recipe and overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingChoice {
    /// `paper`, `ilm-vp` or `evp`.
    #[serde(default = "default_recipe")]
    pub recipe: String,
    /// Epochs.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Base learning rate.
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// Seed of the batch order.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Validate every N epochs.
    #[serde(default)]
    pub eval_every: Option<usize>,
    /// The learning-rate schedule, e.g. `"CosinePerStep"` or `{WarmupCosine = {warmup = 100}}`.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
}

fn default_recipe() -> String {
    "paper".into()
}

impl Default for TrainingChoice {
    fn default() -> Self {
        Self {
            recipe: default_recipe(),
            epochs: None,
            batch_size: None,
            learning_rate: None,
            seed: None,
            eval_every: None,
            schedule: None,
        }
    }
}

impl TrainingChoice {
    /// The effective training config.
    pub fn config(&self) -> Result<TrainingConfig> {
        let mut c = match self.recipe.as_str() {
            "paper" => TrainingConfig::paper(),
            "ilm-vp" => TrainingConfig::ilm_vp(),
            "evp" => TrainingConfig::evp(),
            other => {
                return Err(invalid(format!(
                    "unknown recipe `{other}`; expected paper, ilm-vp or evp"
                )));
            }
        };
        if let Some(v) = self.epochs {
            c = c.with_epochs(v);
        }
        if let Some(v) = self.batch_size {
            c = c.with_batch_size(v);
        }
        if let Some(v) = self.learning_rate {
            c = c.with_learning_rate(v);
        }
        if let Some(v) = self.seed {
            c = c.with_seed(v);
        }
        if let Some(v) = self.eval_every {
            c = c.with_eval_every(v);
        }
        if let Some(v) = &self.schedule {
            c = c.with_schedule(v.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Where checkpoints, metrics and curves go.
    pub run_dir: PathBuf,
    /// The data.
    pub data: DataConfig,
    /// The frozen model.
    #[serde(default)]
    pub backbone: BackboneConfig,
    /// The prompt template, e.g. `{"Padding": {"pad": 30}}` (the paper's default).
    #[serde(default = "default_prompt")]
    pub prompt: serde_json::Value,
    /// The label mapping (default: the paper's `FirstN`).
    #[serde(default = "default_mapping")]
    pub mapping: serde_json::Value,
    /// CLIP (a backbone with a `text_preset`): the text prompt, `{}` standing for the class name
    /// (default: the paper's "This is a photo of a {}").
    #[serde(default)]
    pub text_template: Option<String>,
    /// Recipe and overrides.
    #[serde(default)]
    pub training: TrainingChoice,
}

fn default_prompt() -> serde_json::Value {
    serde_json::to_value(PromptConfig::from(PaddingPromptConfig::new(30))).expect("configs serialise")
}

fn default_mapping() -> serde_json::Value {
    serde_json::to_value(LabelMappingConfig::FirstN).expect("configs serialise")
}

fn invalid(message: String) -> Error {
    Error::Train(vprompt_train::TrainError::Mismatch(message))
}

/// The prepared splits of a run.
#[derive(Debug, Clone)]
pub struct PreparedSplits {
    /// Training part of the train split.
    pub train: Arc<PreparedDataset>,
    /// Validation part, for selection.
    pub valid: Arc<PreparedDataset>,
    /// The test split, evaluated once at the end.
    pub test: Arc<PreparedDataset>,
}

impl RunConfig {
    /// The prompt config, with defaults for omitted fields.
    pub fn prompt_config(&self) -> Result<PromptConfig> {
        PromptConfig::from_json(&self.prompt.to_string()).map_err(Into::into)
    }

    /// The mapping config.
    pub fn mapping_config(&self) -> Result<LabelMappingConfig> {
        serde_json::from_value(self.mapping.clone()).map_err(|e| {
            invalid(format!(
                "mapping: {e}; examples: \"FirstN\", {{Random = {{seed = 0}}}}, \"Frequency\", {{Iterative = {{every = 1}}}}"
            ))
        })
    }

    /// The preset.
    pub fn preset(&self) -> Result<Preset> {
        Ok(Preset::from_name(&self.backbone.preset)?)
    }

    /// The `[height, width]` the backbone takes: `backbone.input_size`, or the preset's.
    pub fn input_size(&self) -> Result<[usize; 2]> {
        let preset = self.preset()?;
        let size = self.backbone.input_size.unwrap_or(preset.input_size());
        preset.check_input_size(size)?;
        Ok(size)
    }

    /// Checks everything that can be checked without reading data or weights.
    pub fn validate(&self) -> Result<()> {
        let prompt = self.prompt_config()?;
        prompt.validate(self.input_size()?)?;
        self.mapping_config()?;
        self.training.config()?;
        match (&self.backbone.text_preset, &self.backbone.text_weights) {
            (Some(p), Some(_)) => {
                Preset::from_name(p)?;
            }
            (Some(_), None) => {
                return Err(invalid("backbone.text_preset needs backbone.text_weights".into()));
            }
            (None, Some(_)) => {
                return Err(invalid("backbone.text_weights needs backbone.text_preset".into()));
            }
            (None, None) => {
                if self.text_template.is_some() {
                    return Err(invalid(
                        "text_template needs a CLIP text tower (backbone.text_preset and text_weights)"
                            .into(),
                    ));
                }
            }
        }
        if let Some(t) = &self.text_template
            && !t.contains("{}")
        {
            return Err(invalid(format!(
                "text_template `{t}` has no `{{}}` for the class name"
            )));
        }
        if !(self.data.validation > 0.0 && self.data.validation < 1.0) {
            return Err(invalid(format!(
                "data.validation must be in (0, 1), got {}",
                self.data.validation
            )));
        }
        Ok(())
    }

    /// Loads the frozen backbone on `device`.
    pub fn backbone(&self, device: &Device) -> Result<ImageBackbone> {
        let preset = self.preset()?;
        let size = self.input_size()?;
        let backbone = match (&self.backbone.weights, preset) {
            (None, Preset::EfficientNetLite0) => ImageBackbone::efficientnet_lite0(device)?,
            (Some(path), preset) => ImageBackbone::load(preset, path, device)?,
            (None, preset) => ImageBackbone::load(preset, format!("{preset}.bpk"), device)?,
        };
        Ok(backbone.with_input_size(size)?)
    }

    /// Whether the classes are scored by a CLIP text tower rather than a label mapping.
    pub fn is_clip(&self) -> bool {
        self.backbone.text_preset.is_some()
    }

    /// The class head for `classes` before training: the CLIP text head when the backbone has a text
    /// tower (computed once here), else the label mapping (`FirstN` standing in for a mapping that
    /// the trainer fits on the data, see [`Self::mapping_to_fit`]).
    pub fn head(&self, backbone: &ImageBackbone, classes: &[String], device: &Device) -> Result<Mapping> {
        if let (Some(preset), Some(weights)) = (&self.backbone.text_preset, &self.backbone.text_weights) {
            let text = TextEncoder::load(Preset::from_name(preset)?, weights, device)?;
            let template = self.text_template.as_deref().unwrap_or(PAPER_TEMPLATE);
            return Ok(clip_head(classes, &[template.to_string()], 32, device, |t| {
                text.forward(t)
            })?);
        }
        let config = match self.mapping_to_fit()? {
            Some(_) => LabelMappingConfig::FirstN,
            None => self.mapping_config()?,
        };
        Ok(config.init(backbone.output_dim(), classes.len(), device)?)
    }

    /// The label mapping that must be fitted on the data (frequency, ILM, BLM), if any; never for
    /// CLIP, whose text head is the mapping.
    pub fn mapping_to_fit(&self) -> Result<Option<LabelMappingConfig>> {
        let config = self.mapping_config()?;
        Ok((config.needs_fit() && !self.is_clip()).then_some(config))
    }

    fn read(&self) -> Result<Splits> {
        let d = &self.data;
        let on_error = if d.skip_unreadable {
            OnError::Skip
        } else {
            OnError::Fail
        };
        let needs_test = || {
            d.test_path
                .clone()
                .ok_or_else(|| invalid(format!("data.format = \"{}\" needs data.test_path", d.format)))
        };
        Ok(match d.format.as_str() {
            "fashion-mnist" => fashion_mnist(&d.path)?,
            "mnist" => mnist(&d.path)?,
            "cifar10" => cifar10(&d.path)?,
            "cifar100" => cifar100(&d.path)?,
            "folder" => Splits {
                train: image_folder(&d.path, on_error)?,
                test: image_folder(needs_test()?, on_error)?,
            },
            "csv" => {
                let classes = d
                    .classes
                    .clone()
                    .ok_or_else(|| invalid("data.format = \"csv\" needs data.classes".into()))?;
                let root = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
                let test = needs_test()?;
                Splits {
                    train: csv_list(&d.path, root(&d.path), &classes, on_error)?,
                    test: csv_list(&test, root(&test), &classes, on_error)?,
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown data.format `{other}`; expected fashion-mnist, mnist, cifar10, cifar100, folder or csv"
                )));
            }
        })
    }

    /// Reads, splits and prepares the data at `size` (cached on disk).
    pub fn prepare_data(&self, size: [usize; 2]) -> Result<PreparedSplits> {
        let d = &self.data;
        let splits = self.read()?;
        let (pool, valid) = splits.train.split_validation(d.validation, d.seed)?;
        let train = match d.few_shot {
            Some(n) => pool.few_shot(n, d.seed)?,
            None => pool,
        };
        let valid = match d.validation_per_class.or(d.few_shot) {
            Some(n) => valid.few_shot(n, d.seed)?,
            None => valid,
        };
        let test = match d.test_per_class {
            Some(n) => splits.test.few_shot(n, d.seed)?,
            None => splits.test,
        };
        let filter = match d.filter.as_str() {
            "bicubic" => Filter::Bicubic,
            "bilinear" => Filter::Bilinear,
            "nearest" => Filter::Nearest,
            other => return Err(invalid(format!("unknown data.filter `{other}`"))),
        };
        let preprocess = Preprocess {
            size,
            filter,
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
        let prepare = |data: &Dataset| -> Result<Arc<PreparedDataset>> {
            Ok(Arc::new(prepare_cached(data, &preprocess, &cache)?.0))
        };
        Ok(PreparedSplits {
            train: prepare(&train)?,
            valid: prepare(&valid)?,
            test: prepare(&test)?,
        })
    }

    /// Trains: loads the backbone and data, builds the prompt and mapping, runs the trainer (resuming
    /// from the run directory's checkpoint if there is one), writes the effective config beside it.
    pub fn train(&self, device: &Device, quiet: bool) -> Result<(Trained<ImageBackbone>, PreparedSplits)> {
        self.validate()?;
        let backbone = self.backbone(device)?;
        let prompt = self.prompt_config()?.init(backbone.input_size(), device)?;
        let data = self.prepare_data(prompt.input_size())?;
        let mapping = self.head(&backbone, &data.train.classes, device)?;
        let classifier = PromptedClassifier::new(prompt, backbone, mapping)?;
        std::fs::create_dir_all(&self.run_dir).map_err(|source| {
            Error::Train(vprompt_train::TrainError::Io {
                path: self.run_dir.clone(),
                source,
            })
        })?;
        let names = data.train.classes.join("\n") + "\n";
        let path = self.run_dir.join("classes.txt");
        std::fs::write(&path, names)
            .map_err(|source| Error::Train(vprompt_train::TrainError::Io { path, source }))?;
        let effective = serde_json::to_string_pretty(self).expect("run configs serialise");
        let path = self.run_dir.join("run.json");
        std::fs::write(&path, effective)
            .map_err(|source| Error::Train(vprompt_train::TrainError::Io { path, source }))?;
        let mut trainer = Trainer::new(self.training.config()?, device)
            .with_run_dir(&self.run_dir)
            .quiet(quiet);
        if let Some(config) = self.mapping_to_fit()? {
            trainer = trainer.with_mapping(config);
        }
        let trained = trainer.train(classifier, data.train.clone(), data.valid.clone())?;
        Ok((trained, data))
    }

    /// Reads the effective config a training run wrote to its directory.
    pub fn from_run_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|source| {
            Error::Train(vprompt_train::TrainError::Io {
                path: path.clone(),
                source,
            })
        })?;
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }
}

/// The class names a training run recorded (`classes.txt`).
pub fn class_names(dir: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = dir.as_ref().join("classes.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| Error::Train(vprompt_train::TrainError::Io { path, source }))?;
    Ok(text.lines().map(String::from).collect())
}

/// Evaluates the best prompt of a finished (or interrupted) run on its test split.
pub fn evaluate_run(dir: impl AsRef<Path>, device: &Device) -> Result<Report> {
    let dir = dir.as_ref();
    let config = RunConfig::from_run_dir(dir)?;
    let backbone = config.backbone(device)?;
    let run = vprompt_train::RunDir::create(dir)?;
    let (prompt, mapping) = run.load_best(device)?.ok_or_else(|| {
        invalid(format!(
            "{} has no selected prompt yet (train at least one epoch)",
            dir.display()
        ))
    })?;
    let mapping =
        mapping.ok_or_else(|| invalid(format!("{} holds no mapping (a black-box run?)", dir.display())))?;
    let data = config.prepare_data(prompt.input_size())?;
    let classifier = PromptedClassifier::new(prompt, backbone, mapping)?;
    let batch = config.training.config()?.batch_size;
    let loader = vprompt_data::BatchLoader::new(data.test.clone(), batch)?;
    Ok(Report {
        classes: data.test.classes.clone(),
        prompted: vprompt_train::evaluate(&classifier, &loader, device, true)?,
        unprompted: vprompt_train::evaluate(&classifier, &loader, device, false)?,
    })
}
