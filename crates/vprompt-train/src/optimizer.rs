//! The optimiser that updates the prompt: burn's SGD and Adam (configured with PyTorch's semantics),
//! or EVP's normalised-gradient step, with state that is saved in checkpoints.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Bytes;

use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};

/// A prompt optimiser with checkpointable state.
pub enum PromptOptimizer {
    /// burn's SGD or Adam.
    Burn(ModuleOptimizer),
    /// EVP's normalised gradient (stateless).
    NormalizedGradient,
}

impl PromptOptimizer {
    /// Builds the optimiser a config names.
    pub fn new(config: &OptimizerConfig) -> Self {
        match *config {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                weight_decay,
            } => {
                let mut sgd = SgdConfig::new();
                if momentum > 0.0 {
                    sgd = sgd.with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(momentum)
                            .with_dampening(dampening),
                    ));
                }
                if weight_decay > 0.0 {
                    sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)));
                }
                Self::Burn(sgd.init())
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                weight_decay,
            } => {
                let mut adam = AdamConfig::new()
                    .with_beta_1(beta1 as f32)
                    .with_beta_2(beta2 as f32)
                    .with_epsilon(1e-8);
                if weight_decay > 0.0 {
                    adam = adam.with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)));
                }
                Self::Burn(adam.init())
            }
            OptimizerConfig::NormalizedGradient => Self::NormalizedGradient,
        }
    }

    /// One update of `module` with learning rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            Self::Burn(optim) => optim.step(lr, module, grads),
            Self::NormalizedGradient => module.map(&mut NormalizedStep { lr, grads }),
        }
    }

    /// The state as bytes (empty for the stateless normalised gradient).
    pub fn state(&self) -> Result<Vec<u8>> {
        match self {
            Self::Burn(optim) => optim
                .into_bytes()
                .map(|b| b.to_vec())
                .map_err(|e| TrainError::Checkpoint {
                    path: crate::engine::OPTIMIZER_FILE.into(),
                    reason: format!("cannot serialise the optimiser state: {e}"),
                }),
            Self::NormalizedGradient => Ok(Vec::new()),
        }
    }

    /// Restores state written by [`state`](Self::state).
    pub fn with_state(self, bytes: Vec<u8>) -> std::result::Result<Self, String> {
        match self {
            Self::Burn(optim) => optim
                .from_bytes(Bytes::from_bytes_vec(bytes))
                .map(Self::Burn)
                .map_err(|e| e.to_string()),
            Self::NormalizedGradient => Ok(Self::NormalizedGradient),
        }
    }
}

/// `p <- p - lr * g / (||g|| + 1e-10)` for every parameter with a gradient.
struct NormalizedStep {
    lr: f64,
    grads: GradientsParams,
}

impl ModuleMapper for NormalizedStep {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let value = tensor.inner();
        let grad = grad.inner();
        let norm = grad.clone().powi_scalar(2).sum().sqrt().add_scalar(1e-10);
        let step = grad.div(norm.unsqueeze()).mul_scalar(self.lr);
        let mut updated = Tensor::from_inner(value - step);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
