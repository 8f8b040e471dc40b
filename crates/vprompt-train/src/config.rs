use serde::{Deserialize, Serialize};
use vprompt_mapping::LabelMappingConfig;

use crate::error::{ConfigError, Result};

/// The optimiser that updates the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD, PyTorch semantics: `buf <- g` at the first step, then `buf <- m * buf + (1 - dampening) g`;
    /// weight decay added to `g` first (coupled).
    Sgd {
        /// Momentum `m` (0 for none).
        momentum: f64,
        /// Dampening (PyTorch's default and the paper's: 0; burn's default would be 0.1).
        dampening: f64,
        /// Weight decay.
        weight_decay: f64,
    },
    /// Adam, PyTorch semantics (`eps = 1e-8`).
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Weight decay (coupled).
        weight_decay: f64,
    },
    /// EVP's normalised-gradient step, no momentum: `delta <- delta - lr * g / (||g|| + 1e-10)`,
    /// the norm over the gradient of the learned values (EVP takes it over the whole image's
    /// gradient before masking; see the docs).
    NormalizedGradient,
}

/// How the learning rate evolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Constant.
    Constant,
    /// The paper's: linear warmup over `warmup` iterations (`lr * (step + 1) / warmup`), then
    /// per-iteration cosine decay to 0 at the last step (`utils.py cosine_lr`).
    WarmupCosine {
        /// Warmup iterations (the paper: 1000, a fixed count, not a fraction).
        warmup: u64,
    },
    /// Cosine decay per iteration with no warmup (ILM-VP and BLM on CLIP).
    CosinePerStep,
    /// Cosine decay stepped once per epoch (EVP): `lr * 0.5 * (1 + cos(pi * epoch / epochs))`.
    CosinePerEpoch,
    /// Multiply by `gamma` at each milestone, given as fractions of the epochs (ILM-VP: 0.5 and 0.72,
    /// gamma 0.1).
    MultiStep {
        /// Milestones as fractions of the total epochs.
        milestones: Vec<f64>,
        /// Factor at each milestone.
        gamma: f64,
    },
}

vprompt_core::config! {
    /// Everything about a gradient training run except the model and the data.
    pub struct TrainingConfig {
        /// Epochs over the training split.
        pub epochs: usize,
        /// Base learning rate.
        pub learning_rate: f64,
        /// The optimiser.
        pub optimizer: OptimizerConfig,
        /// The learning-rate schedule.
        pub schedule: ScheduleConfig,
    }
    defaults {
        /// Images per batch.
        pub batch_size: usize = 32,
        /// Seed of the batch order (the prompt's own seed is in its config).
        pub seed: u64 = 0,
        /// Evaluate on the validation split every this many epochs (and after the last).
        pub eval_every: usize = 1,
        /// Plain-line progress: a line every this many steps (0: only per epoch).
        pub log_every: u64 = 50,
        /// The run stops with an error when a prompt value's magnitude exceeds this after an
        /// epoch: a diverged run (a normal one stays within a few units of the normalised input
        /// range), reported with its step, the last good checkpoint kept.
        pub divergence_limit: f64 = 1000.0,
        /// A data-driven label mapping (FLM, ILM, BLM, BLM+) fitted before the first epoch and
        /// refitted as it says, or a learned one (FullyMap, a linear probe) initialised from
        /// `seed` and trained with the prompt, replacing the classifier's; `None` keeps the
        /// classifier's mapping (which trains too if it is a learned one).
        pub mapping: Option<LabelMappingConfig> = None,
        /// A learned mapping's base learning rate, on the same schedule as the prompt's; `None`:
        /// the prompt's. A linear layer wants a far smaller step than the paper's SGD at 40.
        pub mapping_learning_rate: Option<f64> = None,
        /// An input-conditional prompt's generator's base learning rate, on the same schedule;
        /// `None`: the prompt's. Its convolution weights want a smaller step than pixel values.
        pub generator_learning_rate: Option<f64> = None,
    }
}

crate::engine::loop_config!(TrainingConfig => "training");

/// A named recipe: the paper's and two follow-ups'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// [`TrainingConfig::paper`].
    Paper,
    /// [`TrainingConfig::ilm_vp`].
    IlmVp,
    /// [`TrainingConfig::evp`].
    Evp,
}

impl Recipe {
    /// The recipe's training config.
    pub fn config(self) -> TrainingConfig {
        match self {
            Recipe::Paper => TrainingConfig::paper(),
            Recipe::IlmVp => TrainingConfig::ilm_vp(),
            Recipe::Evp => TrainingConfig::evp(),
        }
    }
}

impl TrainingConfig {
    /// The paper's recipe (section 3.6, released code): SGD lr 40, momentum 0.9, dampening 0, weight
    /// decay 0, 1000-iteration linear warmup then per-iteration cosine decay, 1000 epochs. The paper
    /// uses batch 256 for CLIP, 128 for BiT-M and RN50, 32 for the Instagram ResNeXt; the default
    /// here is 128, change it with `with_batch_size`.
    pub fn paper() -> Self {
        Self::new(
            1000,
            40.0,
            OptimizerConfig::Sgd {
                momentum: 0.9,
                dampening: 0.0,
                weight_decay: 0.0,
            },
            ScheduleConfig::WarmupCosine { warmup: 1000 },
        )
        .with_batch_size(128)
    }

    /// ILM-VP's recipe for CNNs: Adam lr 0.01, decay x0.1 at 50 % and 72 % of 200 epochs, batch 128.
    pub fn ilm_vp() -> Self {
        Self::new(
            200,
            0.01,
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                weight_decay: 0.0,
            },
            ScheduleConfig::MultiStep {
                milestones: vec![0.5, 0.72],
                gamma: 0.1,
            },
        )
        .with_batch_size(128)
    }

    /// EVP's recipe: normalised-gradient steps, lr 70, cosine per epoch, 1000 epochs, batch 256.
    pub fn evp() -> Self {
        Self::new(
            1000,
            70.0,
            OptimizerConfig::NormalizedGradient,
            ScheduleConfig::CosinePerEpoch,
        )
        .with_batch_size(256)
    }

    /// With another number of epochs (the schedule stretches with it).
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// With another base learning rate.
    pub fn with_learning_rate(mut self, learning_rate: f64) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// With another optimiser.
    pub fn with_optimizer(mut self, optimizer: OptimizerConfig) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// With another schedule.
    pub fn with_schedule(mut self, schedule: ScheduleConfig) -> Self {
        self.schedule = schedule;
        self
    }

    /// Checks the settings; an error names the field (`learning_rate`, `optimizer.Sgd.momentum`).
    pub fn validate(&self) -> Result<()> {
        ConfigError::at_least_one("epochs", self.epochs as u64)?;
        ConfigError::at_least_one("batch_size", self.batch_size as u64)?;
        ConfigError::positive("learning_rate", self.learning_rate)?;
        ConfigError::at_least_one("eval_every", self.eval_every as u64)?;
        ConfigError::positive("divergence_limit", self.divergence_limit)?;
        match &self.optimizer {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                weight_decay,
            } => {
                ConfigError::non_negative("optimizer.Sgd.momentum", *momentum)?;
                ConfigError::non_negative("optimizer.Sgd.dampening", *dampening)?;
                ConfigError::non_negative("optimizer.Sgd.weight_decay", *weight_decay)?;
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                weight_decay,
            } => {
                for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(beta) {
                        return Err(ConfigError::new(
                            format!("optimizer.Adam.{name}"),
                            format!("must be in [0, 1), got {beta}"),
                        )
                        .into());
                    }
                }
                ConfigError::non_negative("optimizer.Adam.weight_decay", *weight_decay)?;
            }
            OptimizerConfig::NormalizedGradient => {}
        }
        if let ScheduleConfig::MultiStep { milestones, gamma } = &self.schedule {
            if let Some(m) = milestones.iter().find(|m| !(0.0..=1.0).contains(*m)) {
                return Err(ConfigError::new(
                    "schedule.MultiStep.milestones",
                    format!("must be fractions of the epochs in [0, 1], got {m}"),
                )
                .into());
            }
            ConfigError::positive("schedule.MultiStep.gamma", *gamma)?;
        }
        if let Some(mapping) = &self.mapping
            && !mapping.needs_fit()
            && !mapping.is_learned()
        {
            return Err(ConfigError::new(
                "mapping",
                format!(
                    "`{}` is neither fitted on data nor learned; give it to the classifier instead",
                    mapping.method()
                ),
            )
            .into());
        }
        if let Some(lr) = self.mapping_learning_rate {
            ConfigError::positive("mapping_learning_rate", lr)?;
        }
        if let Some(lr) = self.generator_learning_rate {
            ConfigError::positive("generator_learning_rate", lr)?;
        }
        Ok(())
    }
}
