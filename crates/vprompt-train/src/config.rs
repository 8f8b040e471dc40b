use burn::config::Config;

use crate::error::{Result, TrainError};

/// The optimiser that updates the prompt.
#[derive(Config, Debug, PartialEq)]
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
#[derive(Config, Debug, PartialEq)]
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

/// Everything about a training run except the model and the data.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// Epochs over the training split.
    pub epochs: usize,
    /// Images per batch.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Base learning rate.
    pub learning_rate: f64,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Seed of the batch order (the prompt's own seed is in its config).
    #[config(default = 0)]
    pub seed: u64,
    /// Evaluate on the validation split every this many epochs (and after the last).
    #[config(default = 1)]
    pub eval_every: usize,
    /// Print progress to stderr every this many steps (0: only per epoch).
    #[config(default = 50)]
    pub log_every: u64,
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

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::InvalidConfig(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("the batch size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "the learning rate must be finite and > 0, got {}",
                self.learning_rate
            ));
        }
        if self.eval_every == 0 {
            return bad("eval_every must be at least 1".into());
        }
        match &self.optimizer {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                weight_decay,
            } => {
                for (name, v) in [
                    ("momentum", momentum),
                    ("dampening", dampening),
                    ("weight decay", weight_decay),
                ] {
                    if !(v.is_finite() && *v >= 0.0) {
                        return bad(format!("SGD {name} must be finite and >= 0, got {v}"));
                    }
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                weight_decay,
            } => {
                if !((0.0..1.0).contains(beta1) && (0.0..1.0).contains(beta2)) {
                    return bad(format!("Adam betas must be in [0, 1), got {beta1}, {beta2}"));
                }
                if !(weight_decay.is_finite() && *weight_decay >= 0.0) {
                    return bad(format!(
                        "Adam weight decay must be finite and >= 0, got {weight_decay}"
                    ));
                }
            }
            OptimizerConfig::NormalizedGradient => {}
        }
        if let ScheduleConfig::MultiStep { milestones, gamma } = &self.schedule
            && (milestones.iter().any(|m| !(0.0..=1.0).contains(m)) || !(gamma.is_finite() && *gamma > 0.0))
        {
            return bad(format!(
                "multi-step milestones must be fractions in [0, 1] and gamma > 0, got {milestones:?}, {gamma}"
            ));
        }
        Ok(())
    }
}
