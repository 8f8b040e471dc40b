//! Training and evaluation of visual prompts on frozen backbones (paper sections 3.2, 3.6, 5).
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn.
//!
//! # What is here
//! - [`PromptedClassifier`]: prompt + frozen backbone + mapping, `[0, 1]` pixels to logits; without
//!   a prompt ([`PromptedClassifier::unprompted`]) the baselines' classifier.
//! - [`Trainer`]: one engine for every way of training (validation selection, crash-safe
//!   checkpoints and exact resume in a [`RunDir`], metrics and curves, progress through
//!   [`Progress`]), configured by what it trains:
//!   - [`TrainingConfig`]: a prompt by gradient steps, with the paper's recipe
//!     ([`TrainingConfig::paper`]: SGD lr 40, momentum 0.9, 1000-iteration warmup and cosine
//!     decay), ILM-VP's and EVP's ([`Recipe`]), refits of data-driven label mappings, and
//!     mappings learned with the prompt (FullyMap, a linear probe: [`init_mapping`]);
//!   - [`BlackBoxConfig`] ([`BlackBoxTrainer`]): a prompt by zeroth-order steps through a
//!     [`BlackBoxModel`] (images in, scores out; [`LocalModel`] for any backbone + mapping), RGF
//!     and SPSA-GC ([`ZerothOrderConfig`]), every query counted, an optional budget;
//!   - [`LinearProbeConfig`]: the linear-probe baseline on frozen features.
//! - [`evaluate`]: top-1, top-5, per-class accuracy, confusion matrix, prompted and unprompted
//!   ([`Report`]).
//! - [`Ensemble`]: several trained prompts on one backbone, their mapped probabilities averaged.
//! - [`EpochObserver`]: told of each epoch's record (the engine never draws: the run layer's
//!   `Curves` draws a run's curves).

mod black_box;
mod classifier;
mod config;
mod engine;
mod ensemble;
mod error;
mod evaluate;
mod gradient;
mod optimizer;
mod probe;
mod schedule;
mod trainer;

pub use black_box::{
    BlackBoxConfig, BlackBoxModel, BlackBoxReport, BlackBoxTrained, BlackBoxTrainer, LocalModel, QueryError,
    Scores, ZerothOrderConfig, ZerothOrderOptimizer, evaluate_black_box,
};
pub use classifier::{Prediction, PromptedClassifier, Replica};
pub use config::{OptimizerConfig, Recipe, ScheduleConfig, TrainingConfig};
pub use engine::{
    Checkpoint, CheckpointState, EpochObserver, EpochRecord, MAPPING_FILE, OPTIMIZER_FILE, PROBE_FILE,
    PROMPT_FILE, RunDir,
};
pub use ensemble::{Ensemble, EnsembleEvaluation};
pub use error::{ConfigError, Result, TrainError};
pub use evaluate::{Evaluation, Report, Tally, evaluate, evaluate_with};
pub use gradient::{
    Trained, evaluate_unprompted, fit_mapping, init_mapping, train_step, train_step_data_parallel,
};
pub use optimizer::PromptOptimizer;
pub use probe::{LinearProbe, LinearProbeConfig};
pub use schedule::learning_rate;
pub use trainer::Trainer;
pub use vprompt_core::{Lines, Progress, Quiet, Task};
