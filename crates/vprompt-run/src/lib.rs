//! Runs as library objects: everything the `vprompt` tool does with a run, callable from Rust.
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn (they decide which
//!   devices the tests use).
//!
//! # What is here
//! - [`RunConfig`]: a whole run in one typed config (data, backbone, prompt, mapping, the method
//!   with its settings ([`MethodConfig`]: visual prompt, black box, linear probe, unprompted), run
//!   directory), read from TOML by [`read_config_file`], every error naming its key path.
//! - [`Run`]: a run that owns its directory: it checks once that the directory holds this run or
//!   none (settings compared key by key, classes, data and weights fingerprints), records the
//!   run, and runs its method through the engine ([`Run::run`]: what `vprompt train`, `vprompt
//!   black-box` and every experiment cell call), resuming an interrupted run. [`Run::load`] gives a trained run back as a ready classifier
//!   ([`LoadedRun`]); [`LoadedEnsemble`] several, checked to share data, backbone and classes.
//! - [`ExperimentConfig`]: the paper's comparisons from one config: every dataset x backbone x
//!   seed x method cell a run, results tables and figures, shards for job arrays ([`Shard`]).
//! - [`remote`]: black boxes outside the process (a program speaking the line protocol, an HTTP
//!   endpoint); [`serve`]: the protocol's server side, on lines ([`serve_lines`]) or HTTP
//!   ([`serve_http`]), for any black box, a loaded run included.
//! - [`RunError`]: the one error type, each variant's message without its cause repeated.
//!
//! ```no_run
//! use std::sync::Arc;
//! use burn::prelude::*;
//! use vprompt_run::{DataConfig, DataFormat, Run, RunConfig};
//!
//! # fn main() -> vprompt_run::Result<()> {
//! let device = Device::flex();
//! let config = RunConfig::new(
//!     "runs/fmnist".into(),
//!     DataConfig::new(DataFormat::FashionMnist, "tests/fixtures/fashion-mnist".into()),
//! );
//! let finished = Run::new(config)?.run(&[device.clone()], Arc::new(vprompt_train::Quiet))?;
//! println!("test top-1 {:?}", finished.summary().map(|s| s.top1));
//! let loaded = Run::load("runs/fmnist", &device)?; // the selected prompt, ready to classify
//! println!("{}", loaded.evaluate(&device, &vprompt_train::Quiet)?);
//! # Ok(())
//! # }
//! ```

/// The unit tests' allocator records the largest allocation, for the config fuzz test's bound.
#[cfg(test)]
#[global_allocator]
static ALLOC: vprompt_testkit::fuzz::CountingAllocator = vprompt_testkit::fuzz::CountingAllocator;

mod assemble;
mod config;
mod config_file;
pub mod curves;
mod error;
mod experiment;
pub mod remote;
mod run;
pub mod serve;
mod shard;

pub use assemble::{DataFingerprints, PreparedSplits};
pub use config::{
    BackboneConfig, BlackBoxChoice, BlackBoxSource, DataConfig, DataFormat, MethodConfig, ProbeChoice,
    RunConfig, TrainingChoice,
};
pub use config_file::{parse as parse_config, read as read_config_file};
pub use error::{ConfigError, Result, RunError};
pub use experiment::{
    BackboneEntry, Cell, DatasetEntry, ExperimentConfig, MethodEntry, MethodKind, Outcome, PlotConfig, PlotX,
    PlotY, Profile, RESULTS, Results, RunRecord, Share, cells, report,
};
pub use run::{
    BlackBoxRun, CLASSES_FILE, DATA_FILE, EvaluatedEnsemble, Finished, LoadedEnsemble, LoadedRun, ProbeRun,
    RUN_ENTRIES, RUN_FILE, Run, Summary, TrainedRun, UnpromptedRun, class_names, differences, read_config,
};
pub use serve::{Limits, serve_http, serve_lines};
pub use shard::Shard;
