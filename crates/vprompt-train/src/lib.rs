//! Training and evaluation of visual prompts on frozen backbones (paper sections 3.2, 3.6, 5).
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn.
//!
//! - [`PromptedClassifier`]: prompt + frozen backbone + mapping, `[0, 1]` pixels to logits.
//! - [`TrainingConfig`]: the paper's recipe ([`TrainingConfig::paper`]: SGD lr 40, momentum 0.9,
//!   1000-iteration warmup and cosine decay), ILM-VP's ([`TrainingConfig::ilm_vp`]), EVP's
//!   ([`TrainingConfig::evp`]).
//! - [`Trainer`]: the loop, with validation-based selection, crash-safe checkpoints and exact resume
//!   ([`RunDir`]), refits of data-driven mappings, metrics and curves.
//! - [`evaluate`]: top-1, top-5, per-class accuracy, confusion matrix, prompted and unprompted
//!   ([`Report`]); [`LinearProbeConfig`]: the linear-probe baseline.
//! - Black-box prompting (paper section 2.3): [`BlackBoxModel`] (images in, scores out; [`LocalModel`]
//!   for any backbone + mapping), zeroth-order optimisers ([`ZerothOrderConfig`]: RGF and SPSA-GC)
//!   and [`BlackBoxTrainer`], the same harness with every query counted and an optional budget.

mod black_box_trainer;
mod blackbox;
mod classifier;
mod config;
mod error;
mod evaluate;
mod optimizer;
mod plot;
mod probe;
mod run;
mod schedule;
mod trainer;
mod zeroth_order;

pub use black_box_trainer::{BlackBoxConfig, BlackBoxTrained, BlackBoxTrainer};
pub use blackbox::{BlackBoxModel, BlackBoxReport, LocalModel, QueryError, Scores, evaluate_black_box};
pub use classifier::PromptedClassifier;
pub use config::{OptimizerConfig, ScheduleConfig, TrainingConfig};
pub use error::{Result, TrainError};
pub use evaluate::{Evaluation, Report, Tally, evaluate};
pub use optimizer::PromptOptimizer;
pub use plot::{Series, color_name, line_plot};
pub use probe::{LinearProbe, LinearProbeConfig};
pub use run::{Checkpoint, CheckpointState, EpochRecord, RunDir};
pub use schedule::learning_rate;
pub use trainer::{Trained, Trainer, evaluate_unprompted, fit_mapping, train_step};
pub use zeroth_order::{ZerothOrderConfig, ZerothOrderOptimizer};
