//! Assembling a run's pieces from its config: the backbone, the class head, and the data read,
//! split and prepared once (with the fingerprints a run directory records).

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_backbone::{Backbone, ImageBackbone, Preset, TextEncoder};
use vprompt_data::{
    Dataset, Fit, OnError, PreparedDataset, Preprocess, Splits, cache_key, cifar10, cifar100, csv_list,
    fashion_mnist, image_folder, mnist, prepare_cached_with,
};
use vprompt_mapping::{LabelMappingConfig, Mapping, PAPER_TEMPLATE, clip_head};
use vprompt_train::{Progress, init_mapping};

use crate::config::{DataFormat, RunConfig};
use crate::error::{ConfigError, Result, io};

/// The prepared splits of a run.
#[derive(Debug, Clone)]
pub struct PreparedSplits {
    /// Training part of the train split.
    pub train: Arc<PreparedDataset>,
    /// Validation part, for selection; `None` with `data.validation = 0`.
    pub valid: Option<Arc<PreparedDataset>>,
    /// The test split, evaluated once at the end.
    pub test: Arc<PreparedDataset>,
    /// What the three were prepared from (the weights' fingerprints are left `None`: a run takes
    /// them once, when it records itself or is loaded, [`RunConfig::weights_fingerprints`]).
    pub fingerprints: DataFingerprints,
}

/// Hashes of every pixel, label and class name of each split and of the preprocessing
/// (`vprompt_data::cache_key`), recorded in a run directory's `data.json`: a resumed run or an
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

impl RunConfig {
    /// `fingerprints` with the content hashes of the backbone's and the text tower's weights
    /// files (each file read once, in chunks).
    pub fn weights_fingerprints(&self, fingerprints: DataFingerprints) -> Result<DataFingerprints> {
        Ok(DataFingerprints {
            weights: weights_fingerprint(self.backbone.weights.as_deref())?,
            text_weights: weights_fingerprint(self.backbone.text_weights.as_deref())?,
            ..fingerprints
        })
    }
}

/// The content hash of a weights file given by path (`None` for a hub name or no file).
fn weights_fingerprint(weights: Option<&Path>) -> Result<Option<u64>> {
    match weights {
        Some(path) if !path.to_str().is_some_and(|s| s.starts_with("hf:")) => Ok(Some(
            vprompt_core::fingerprint::file(path).map_err(io("read", path))?,
        )),
        _ => Ok(None),
    }
}

impl RunConfig {
    /// Loads the frozen backbone on `device`.
    pub fn backbone(&self, device: &Device) -> Result<ImageBackbone> {
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
    pub fn head(&self, backbone: &ImageBackbone, classes: &[String], device: &Device) -> Result<Mapping> {
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

    pub(crate) fn read(&self) -> Result<Splits> {
        let d = &self.data;
        let on_error = if d.skip_unreadable {
            OnError::Skip
        } else {
            OnError::Fail
        };
        let test_path = || {
            d.test_path
                .clone()
                .ok_or_else(|| ConfigError::new("data.test_path", "a `folder` or `csv` dataset needs it"))
        };
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
                let classes = d
                    .classes
                    .clone()
                    .ok_or_else(|| ConfigError::new("data.classes", "a `csv` list needs the class names"))?;
                let root = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
                let test = test_path()?;
                Splits::new(
                    csv_list(&d.path, root(&d.path), &classes, on_error)?,
                    csv_list(&test, root(&test), &classes, on_error)?,
                )?
            }
        })
    }

    /// How the run's images are brought to `size`: its resize filter, stretched or centre-cropped
    /// (the same for training, evaluation and application to new images).
    pub fn preprocess(&self, size: [usize; 2]) -> Preprocess {
        let d = &self.data;
        Preprocess {
            size,
            filter: d.filter,
            fit: d
                .center_crop_from
                .map_or(Fit::Stretch, |s| Fit::CenterCrop { shorter_side: s }),
        }
    }

    /// Reads, splits and prepares the data at `size` (cached on disk), reporting to `progress`.
    pub fn prepare_data(&self, size: [usize; 2], progress: &dyn Progress) -> Result<PreparedSplits> {
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
        // An explicit `validation_per_class` must be there; the few-shot default takes at most
        // what the held-out part has of its smallest class.
        let valid = match (valid, d.validation_per_class, d.few_shot) {
            (Some(valid), Some(n), _) => Some(valid.few_shot(n, d.seed)?),
            (Some(valid), None, Some(shots)) => {
                let available = valid.class_counts().into_iter().min().unwrap_or(0);
                Some(valid.few_shot(shots.min(available).max(1), d.seed)?)
            }
            (valid, _, _) => valid,
        };
        let test = match d.test_per_class {
            Some(n) => splits.test.few_shot(n, d.seed)?,
            None => splits.test,
        };
        let preprocess = self.preprocess(size);
        let cache = d.cache_dir.clone().unwrap_or_else(|| {
            self.run_dir
                .parent()
                .unwrap_or(Path::new("."))
                .join(".vprompt-cache")
        });
        let prepare = |name: &str, data: &Dataset| -> Result<Arc<PreparedDataset>> {
            let mut task = progress.task(&format!("preparing {name}"), data.len() as u64, "images");
            Ok(Arc::new(
                prepare_cached_with(data, &preprocess, &cache, task.as_mut())?.0,
            ))
        };
        let fingerprints = DataFingerprints {
            train: cache_key(&train, &preprocess),
            valid: valid.as_ref().map_or(0, |v| cache_key(v, &preprocess)),
            test: cache_key(&test, &preprocess),
            weights: None,
            text_weights: None,
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
}
