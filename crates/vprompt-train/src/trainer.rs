//! [`Trainer`]: the one entry point to the engine, configured by what it trains.

use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use vprompt_core::Progress;

use crate::engine::{EpochObserver, RunOptions};

/// Trains with the method its config names, through the one engine (validation selection,
/// crash-safe checkpoints, exact resume, metrics; curves through an [`EpochObserver`]):
///
/// - `Trainer<`[`TrainingConfig`](crate::TrainingConfig)`>`: a prompt by gradient steps
///   ([`train`](Trainer::train));
/// - `Trainer<`[`BlackBoxConfig`](crate::BlackBoxConfig)`>` ([`BlackBoxTrainer`](crate::BlackBoxTrainer)):
///   a prompt by zeroth-order steps through a model that can only be queried;
/// - `Trainer<`[`LinearProbeConfig`](crate::LinearProbeConfig)`>`: a linear probe on frozen features.
///
/// Build it with the config and the plain device the backbone and data live on.
#[derive(Debug, Clone)]
pub struct Trainer<C> {
    pub(crate) config: C,
    pub(crate) device: Device,
    /// Further devices a gradient step splits its batch over (data parallel); empty: `device` alone.
    pub(crate) replicas: Vec<Device>,
    pub(crate) options: RunOptions,
}

impl<C> Trainer<C> {
    /// A trainer for `config`, with the backbone and data on `device` (a plain device such as
    /// `Device::flex()`; gradient methods train on `device.autodiff()`).
    pub fn new(config: C, device: &Device) -> Self {
        Self {
            config,
            device: device.clone(),
            replicas: Vec::new(),
            options: RunOptions::default(),
        }
    }

    /// Writes checkpoints, metrics and curves to `dir`, and resumes from its checkpoint if it has
    /// one.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.run_dir = Some(dir.into());
        self
    }

    /// Stops after this many steps in total, as if the process were killed there (no checkpoint
    /// is written at that point). For tests of resumption and for timing.
    pub fn stop_after_steps(mut self, steps: u64) -> Self {
        self.options.stop_after_steps = Some(steps);
        self
    }

    /// Reports progress to `progress` (the default: plain lines on stderr every `log_every`
    /// steps, and one per epoch).
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.options.progress = Some(progress);
        self
    }

    /// Tells `observer` of each epoch as it is recorded (the run layer's `Curves` draws the
    /// run's curves from them); several observers are told in the order they were added.
    pub fn with_observer(mut self, observer: Arc<dyn EpochObserver>) -> Self {
        self.options.observers.push(observer);
        self
    }

    /// Reports no progress at all.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.options.quiet = quiet;
        self
    }

    /// The config.
    pub fn config(&self) -> &C {
        &self.config
    }
}
