//! The linear-probe baseline (paper section 4.2): a linear classifier on the frozen backbone's
//! penultimate features (its outputs where it exposes no features), trained with Adam on
//! features computed once, through the same engine as a prompt (selection on the validation
//! split, checkpoints, exact resume, metrics and curves).

use std::path::Path;
use std::sync::Arc;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_backbone::Backbone;
use vprompt_core::pack::{self, Extra, Ids, Pack};
use vprompt_core::{ConfigError, Task};
use vprompt_data::{BatchLoader, PreparedDataset};

use crate::engine::{
    self, At, CheckpointState, LoopConfig, LoopSettings, Method, OPTIMIZER_FILE, PROBE_FILE, Snapshot,
    Stepped,
};
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Tally};
use crate::optimizer::PromptOptimizer;
use crate::trainer::Trainer;

vprompt_core::config! {
    /// Settings of the linear probe.
    pub struct LinearProbeConfig {}
    defaults {
        /// Epochs over the cached training features.
        pub epochs: usize = 100,
        /// Adam learning rate (0.001 underfits the tiny fixture's features in 30 epochs; 0.01 does not).
        pub learning_rate: f64 = 1e-2,
        /// Features per batch.
        pub batch_size: usize = 256,
        /// Seed of the initial weights and the batch order.
        pub seed: u64 = 0,
        /// Plain-line progress: a line every this many steps (0: only per epoch).
        pub log_every: u64 = 0,
    }
}

/// A trained linear probe.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    linear: Linear,
    /// Validation top-1 of the selected epoch, and the epoch (1-based); `None` if the run stopped
    /// before its first validation.
    pub best: Option<(usize, f64)>,
}

const METADATA_KEY: &str = "vprompt.probe";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    features: usize,
    classes: usize,
}

impl LoopConfig for LinearProbeConfig {
    const SECTION: &'static str = "linear_probe";

    /// Every epoch is validated: the probe is selected like a prompt.
    fn settings(&self) -> LoopSettings {
        LoopSettings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            eval_every: 1,
            log_every: self.log_every,
            divergence_limit: None,
        }
    }
}

impl LinearProbeConfig {
    /// Checks the settings; an error names the field.
    pub fn validate(&self) -> Result<()> {
        ConfigError::at_least_one("epochs", self.epochs as u64)?;
        ConfigError::at_least_one("batch_size", self.batch_size as u64)?;
        ConfigError::positive("learning_rate", self.learning_rate)?;
        Ok(())
    }

    /// Caches the features of `train` and `valid`, trains the probe and keeps the epoch with the
    /// best validation top-1 (a quiet [`Trainer`] without a run directory).
    pub fn fit<B: Backbone>(
        &self,
        backbone: &B,
        train: &Arc<PreparedDataset>,
        valid: &Arc<PreparedDataset>,
        device: &Device,
    ) -> Result<LinearProbe> {
        Trainer::new(self.clone(), device)
            .quiet(true)
            .train(backbone, train.clone(), valid.clone())
    }
}

impl Trainer<LinearProbeConfig> {
    /// Trains a linear probe on `backbone`'s frozen features of `train`, selecting on `valid`.
    pub fn train<B: Backbone>(
        &self,
        backbone: &B,
        train: Arc<PreparedDataset>,
        valid: Arc<PreparedDataset>,
    ) -> Result<LinearProbe> {
        self.config.validate()?;
        let ad = self.device.clone().autodiff();
        let plain = self.device.clone();
        let (dim, classes) = (backbone.feature_dim(), train.classes.len());
        ad.seed(self.config.seed);
        let mut method = ProbeMethod {
            config: self.config.clone(),
            input_size: backbone.input_size(),
            classes,
            dim,
            features: None,
            linear: LinearConfig::new(dim, classes).init(&ad),
            optimizer: PromptOptimizer::Burn(AdamConfig::new().with_epsilon(1e-8).init()),
            device: self.device.clone(),
            ad,
            extract: Box::new(move |data| features(backbone, data, &plain)),
        };
        let outcome = engine::run(&self.options, &self.config, &mut method, train, Some(valid))?;
        Ok(LinearProbe {
            linear: outcome.selected,
            best: outcome.best,
        })
    }
}

/// Features of every image of `data`, unprompted, row-major `[n * F]`.
fn features<B: Backbone>(backbone: &B, data: &Arc<PreparedDataset>, device: &Device) -> Result<Vec<f32>> {
    let loader = BatchLoader::new(data.clone(), 64)?;
    let mut out = Vec::with_capacity(data.len() * backbone.feature_dim());
    for batch in loader.epoch(0, 0, device) {
        let (f, _) = backbone.forward_features(backbone.normalize(batch.images))?;
        out.extend(f.into_data().try_into_vec_as::<f32>().expect("f32 features"));
    }
    Ok(out)
}

/// Rows `indices` of `features` (`dim` wide), as a `[indices, dim]` tensor.
fn rows(features: &[f32], dim: usize, indices: &[usize], device: &Device) -> Tensor<2> {
    let values: Vec<f32> = indices
        .iter()
        .flat_map(|&i| features[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(values, [indices.len(), dim]), device)
}

fn evaluate_linear(
    linear: &Linear,
    features: &[f32],
    dim: usize,
    labels: &[usize],
    classes: usize,
    device: &Device,
    task: &mut dyn Task,
) -> Evaluation {
    let mut tally = Tally::new(classes);
    for (rows, ls) in features.chunks(1024 * dim).zip(labels.chunks(1024)) {
        let x = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [ls.len(), dim]), device);
        let logits = linear
            .forward(x)
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 logits");
        tally.add(&logits, ls);
        task.advance(ls.len() as u64, &String::new);
    }
    tally.finish()
}

/// The features of the training and validation splits, computed once per run.
struct Cached {
    train: Vec<f32>,
    valid: Vec<f32>,
    valid_labels: Vec<usize>,
}

type Extract<'a> = Box<dyn Fn(&Arc<PreparedDataset>) -> Result<Vec<f32>> + 'a>;

/// A probe run's state: the linear layer on the autodiff device, Adam, the cached features.
struct ProbeMethod<'a> {
    config: LinearProbeConfig,
    input_size: [usize; 2],
    classes: usize,
    dim: usize,
    features: Option<Cached>,
    linear: Linear,
    optimizer: PromptOptimizer,
    device: Device,
    ad: Device,
    extract: Extract<'a>,
}

impl ProbeMethod<'_> {
    fn cached(&self) -> &Cached {
        self.features
            .as_ref()
            .expect("features are cached before the first epoch")
    }

    fn load_linear(&self, path: &Path, device: &Device) -> Result<Linear> {
        let pack = Pack::read(path)?;
        let header: Header = pack.header(METADATA_KEY, FORMAT_VERSION)?;
        if (header.features, header.classes) != (self.dim, self.classes) {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "a probe of {} features and {} classes, this run has {} and {}",
                    header.features, header.classes, self.dim, self.classes
                ),
            });
        }
        let mut linear = LinearConfig::new(self.dim, self.classes).init(device);
        pack.load_into(&mut linear, Extra::Refuse)?;
        Ok(linear)
    }
}

impl Method for ProbeMethod<'_> {
    type Selected = Linear;
    type Batch = Vec<usize>;

    fn input_size(&self) -> [usize; 2] {
        self.input_size
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn batches(&self, loader: &BatchLoader, epoch: u64) -> Box<dyn Iterator<Item = Vec<usize>>> {
        let order = loader.order(epoch);
        let chunks: Vec<Vec<usize>> = order
            .chunks(self.config.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(chunks.into_iter())
    }

    /// Computes the features of both splits once, before the first epoch this process runs.
    fn begin_epoch(
        &mut self,
        _epoch: usize,
        train: &BatchLoader,
        _: &dyn vprompt_core::Progress,
    ) -> Result<()> {
        if self.features.is_none() {
            // The engine hands over the training loader; the validation split comes with `validate`.
            let data = train.data();
            self.features = Some(Cached {
                train: (self.extract)(data)?,
                valid: Vec::new(),
                valid_labels: Vec::new(),
            });
        }
        Ok(())
    }

    fn step(&mut self, batch: Vec<usize>, labels: &[usize], at: At) -> Result<Stepped> {
        let cached = self.cached();
        let x = rows(&cached.train, self.dim, &batch, &self.ad);
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.len()]), &self.ad);
        let logits = self.linear.forward(x);
        let loss = CrossEntropyLossConfig::new()
            .init(&self.ad)
            .forward(logits.clone(), y);
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                loss: value,
                step: at.step,
                epoch: at.epoch + 1,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.linear);
        self.linear = self
            .optimizer
            .step(self.config.learning_rate, self.linear.clone(), grads);
        Ok(Stepped {
            loss: value as f64,
            scores: logits
                .inner()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32 logits"),
            lr: self.config.learning_rate,
        })
    }

    fn validate(&mut self, valid: &BatchLoader, task: &mut dyn Task) -> Result<Evaluation> {
        let cached = self
            .features
            .as_mut()
            .expect("features are cached before the first epoch");
        if cached.valid_labels.is_empty() {
            cached.valid = (self.extract)(valid.data())?;
            cached.valid_labels = valid.data().labels.clone();
        }
        let cached = self.cached();
        Ok(evaluate_linear(
            &self.linear.valid(),
            &cached.valid,
            self.dim,
            &cached.valid_labels,
            self.classes,
            &self.device,
            task,
        ))
    }

    fn selected(&self) -> Linear {
        self.linear.valid()
    }

    fn save(&self, dir: &Path, snapshot: Snapshot) -> Result<()> {
        let header = pack::json_header(
            FORMAT_VERSION,
            &Header {
                features: self.dim,
                classes: self.classes,
            },
        );
        pack::write(
            dir.join(PROBE_FILE),
            pack::module_tensors(&self.linear, Ids::Keep),
            &[(METADATA_KEY, &header)],
        )?;
        if snapshot == Snapshot::Checkpoint {
            engine::write_file(&dir.join(OPTIMIZER_FILE), &self.optimizer.state()?)?;
        }
        Ok(())
    }

    fn restore(&mut self, dir: &Path, _state: &CheckpointState) -> Result<()> {
        self.linear = self.load_linear(&dir.join(PROBE_FILE), &self.ad)?;
        let path = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&path).map_err(crate::error::io(&path))?;
        self.optimizer = PromptOptimizer::Burn(AdamConfig::new().with_epsilon(1e-8).init())
            .with_state(bytes)
            .map_err(|reason| TrainError::Checkpoint {
                path,
                reason: format!("unreadable optimiser state: {reason}"),
            })?;
        Ok(())
    }

    fn load_selected(&self, dir: &Path) -> Result<Linear> {
        self.load_linear(&dir.join(PROBE_FILE), &self.device)
    }
}

impl LinearProbe {
    /// Accuracy on `data` (the test split, once, at the end).
    pub fn evaluate<B: Backbone>(
        &self,
        backbone: &B,
        data: &Arc<PreparedDataset>,
        device: &Device,
    ) -> Result<Evaluation> {
        let x = features(backbone, data, device)?;
        Ok(evaluate_linear(
            &self.linear,
            &x,
            backbone.feature_dim(),
            &data.labels,
            data.classes.len(),
            device,
            &mut vprompt_core::Quiet,
        ))
    }
}
