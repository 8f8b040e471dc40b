//! Black-box training: the engine's [`Method`] for `Trainer<BlackBoxConfig>`
//! ([`BlackBoxTrainer`]). What is particular to it: the model is only queried, through zeroth-order
//! steps (RGF, SPSA-GC) on the prompt's learned values on the host; every image sent to the model
//! is counted; a query budget stops the run before the first step that would exceed it.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use vprompt_core::{ConfigError, Task};
use vprompt_data::{Batch, BatchLoader, PreparedDataset};
use vprompt_prompt::{Phase, Prompt, VisualPrompt};

use super::model::{
    BlackBoxModel, BlackBoxReport, check_prompt, cross_entropy, evaluate_black_box_with, query_checked,
    report,
};
use super::zeroth_order::{ZerothOrderConfig, ZerothOrderOptimizer};
use crate::engine::{
    self, At, CheckpointState, EpochRecord, Method, OPTIMIZER_FILE, PROMPT_FILE, Queries, RunDir, Snapshot,
    Stepped,
};
use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;
use crate::trainer::Trainer;

vprompt_core::config! {
    /// Everything about a black-box training run except the model, the prompt and the data.
    pub struct BlackBoxConfig {
        /// Epochs over the training split.
        pub epochs: usize,
        /// The zeroth-order optimiser.
        pub optimizer: ZerothOrderConfig,
    }
    defaults {
        /// Images per batch; a step costs `batch * points_per_step` queries.
        pub batch_size: usize = 32,
        /// Seed of the batch order and of the perturbations.
        pub seed: u64 = 0,
        /// Evaluate on the validation split every this many epochs (and after the last).
        pub eval_every: usize = 1,
        /// Plain-line progress: a line every this many steps (0: only per epoch).
        pub log_every: u64 = 10,
        /// Most training queries (images sent to the model by training steps) the run may spend. A
        /// step runs only if its whole cost fits, so the run never exceeds the budget. Validation
        /// queries are counted separately and are not limited.
        pub query_budget: Option<u64> = None,
        /// Most images per call to the model: the perturbed copies of a batch are sent in chunks of
        /// this size.
        pub query_batch: usize = 256,
        /// The run stops with an error when a prompt value's magnitude exceeds this after an
        /// epoch (see `TrainingConfig::divergence_limit`).
        pub divergence_limit: f64 = 1000.0,
    }
}

impl BlackBoxConfig {
    /// Checks the settings; an error names the field.
    pub fn validate(&self) -> Result<()> {
        ConfigError::at_least_one("epochs", self.epochs as u64)?;
        ConfigError::at_least_one("batch_size", self.batch_size as u64)?;
        ConfigError::at_least_one("eval_every", self.eval_every as u64)?;
        ConfigError::at_least_one("query_batch", self.query_batch as u64)?;
        ConfigError::positive("divergence_limit", self.divergence_limit)?;
        if let Some(budget) = self.query_budget {
            ConfigError::at_least_one("query_budget", budget)?;
        }
        self.optimizer.validate().map_err(|e| match e {
            TrainError::InvalidConfig(e) => TrainError::InvalidConfig(e.within("optimizer")),
            e => e,
        })
    }
}

crate::engine::loop_config!(BlackBoxConfig => "black_box");

/// Trains a prompt through a [`BlackBoxModel`], with queries only.
pub type BlackBoxTrainer = Trainer<BlackBoxConfig>;

/// The result of black-box training.
#[derive(Debug, Clone)]
pub struct BlackBoxTrained {
    /// The prompt selected on the validation split (the best validation top-1; the last one if the
    /// run never evaluated).
    pub prompt: Prompt,
    /// One record per epoch (with `queries` set).
    pub history: Vec<EpochRecord>,
    /// Best validation top-1 and its epoch (1-based).
    pub best: Option<(usize, f64)>,
    /// Optimisation steps taken.
    pub steps: u64,
    /// Queries spent by training steps.
    pub queries: u64,
    /// Queries spent on validation.
    pub validation_queries: u64,
    /// Whether the query budget ended the run.
    pub budget_exhausted: bool,
    /// Whether the run stopped at [`Trainer::stop_after_steps`].
    pub interrupted: bool,
    device: Device,
    run_dir: Option<RunDir>,
}

impl Trainer<BlackBoxConfig> {
    /// Trains `prompt` (in pixel space, for the model's input size) on `train`, selecting on
    /// `valid`; the model is only queried.
    pub fn train<M: BlackBoxModel + ?Sized>(
        &self,
        model: &mut M,
        prompt: Prompt,
        train: Arc<PreparedDataset>,
        valid: Arc<PreparedDataset>,
    ) -> Result<BlackBoxTrained> {
        self.config.validate()?;
        check_prompt(&prompt, model)?;
        let mut method = ZerothOrderMethod {
            config: self.config.clone(),
            device: self.device.clone(),
            prompt: prompt.fork(&self.device),
            optimizer: ZerothOrderOptimizer::new(self.config.optimizer.clone()),
            queries: Queries::default(),
            model,
        };
        let outcome = engine::run(&self.options, &self.config, &mut method, train, Some(valid))?;
        Ok(BlackBoxTrained {
            prompt: outcome.selected,
            history: outcome.history,
            best: outcome.best,
            steps: outcome.steps,
            queries: outcome.queries.training,
            validation_queries: outcome.queries.validation,
            budget_exhausted: outcome.budget_exhausted,
            interrupted: outcome.interrupted,
            device: self.device.clone(),
            run_dir: outcome.run_dir,
        })
    }
}

/// A black-box run's state: the prompt (values on the host side of each step), the optimiser's
/// momentum, and the queries spent.
struct ZerothOrderMethod<'m, M: BlackBoxModel + ?Sized> {
    config: BlackBoxConfig,
    device: Device,
    model: &'m mut M,
    prompt: Prompt,
    optimizer: ZerothOrderOptimizer,
    queries: Queries,
}

impl<M: BlackBoxModel + ?Sized> ZerothOrderMethod<'_, M> {
    /// One zeroth-order step on one batch: every candidate point of the step prompts the batch, all
    /// of them go to the model in chunks of `query_batch` images, and the per-point mean
    /// cross-entropy drives the estimate. Returns the updated prompt, the loss (at `w` for RGF, the
    /// mean over the points for SPSA) and the scores of the first point (`w` for RGF,
    /// `w + c_k Delta_1` for SPSA) for the training accuracy.
    fn zeroth_order_step(
        &mut self,
        images: Tensor<4>,
        labels: &[usize],
        step: u64,
        total_steps: u64,
        epoch: usize,
    ) -> Result<(Prompt, f64, Vec<f32>)> {
        let (model, prompt, optimizer, queries) = (
            &mut *self.model,
            &self.prompt,
            &mut self.optimizer,
            &mut self.queries.training,
        );
        let base = prompt.unprompted(images)?;
        let batch = labels.len();
        let learned = prompt.learned();
        let shape = learned.dims();
        let mut w = super::model::host(learned);
        let mask: Vec<bool> = super::model::host(prompt.learned_mask())
            .into_iter()
            .map(|m| m != 0.0)
            .collect();
        let classes = model.num_classes();
        let kind = model.scores();
        let mut first_scores = Vec::new();
        let mut rng = ZerothOrderOptimizer::step_rng(self.config.seed, step);
        let (g, losses) = self
            .config
            .optimizer
            .estimate(&w, &mask, step, &mut rng, |candidates| {
                let mut prompted = Vec::with_capacity(candidates.len());
                for values in candidates {
                    let candidate = prompt.clone().with_learned(Tensor::from_data(
                        TensorData::new(values.clone(), shape),
                        &self.device,
                    ))?;
                    prompted.push(candidate.prompt_framed(base.clone(), Phase::Train { step }));
                }
                let all = Tensor::cat(prompted, 0);
                let total = candidates.len() * batch;
                let mut scores = Vec::with_capacity(total * classes);
                let mut start = 0;
                while start < total {
                    let len = self.config.query_batch.min(total - start);
                    scores.extend(query_checked(model, all.clone().narrow(0, start, len), queries)?);
                    start += len;
                }
                first_scores = scores[..batch * classes].to_vec();
                Ok(scores
                    .chunks(batch * classes)
                    .map(|rows| cross_entropy(rows, labels, classes, kind).iter().sum::<f64>() / batch as f64)
                    .collect())
            })?;
        let loss = match self.config.optimizer {
            ZerothOrderConfig::Rgf { .. } => losses[0],
            ZerothOrderConfig::SpsaGc { .. } => losses.iter().sum::<f64>() / losses.len() as f64,
        };
        if let Some(bad) = losses.iter().find(|l| !l.is_finite()) {
            return Err(TrainError::NonFiniteLoss {
                loss: *bad as f32,
                step,
                epoch: epoch + 1,
            });
        }
        optimizer.update(&mut w, &g, step, total_steps);
        let updated = prompt
            .clone()
            .with_learned(Tensor::from_data(TensorData::new(w, shape), &self.device))?;
        Ok((updated, loss, first_scores))
    }
}

impl<M: BlackBoxModel + ?Sized> Method for ZerothOrderMethod<'_, M> {
    type Selected = Prompt;
    type Batch = Batch;

    fn input_size(&self) -> [usize; 2] {
        self.prompt.input_size()
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn batches(&self, loader: &BatchLoader, epoch: u64) -> Box<dyn Iterator<Item = Batch>> {
        Box::new(loader.epoch(epoch, 0, &self.device))
    }

    fn affordable(&self, images: usize) -> bool {
        let cost = self.config.optimizer.points_per_step() as u64 * images as u64;
        self.config
            .query_budget
            .is_none_or(|budget| self.queries.training + cost <= budget)
    }

    fn step(&mut self, batch: Batch, labels: &[usize], at: At) -> Result<Stepped> {
        let before = self.queries.training;
        let (prompt, loss, scores) =
            self.zeroth_order_step(batch.images, labels, at.step, at.total_steps, at.epoch)?;
        debug_assert_eq!(
            self.queries.training - before,
            self.config.optimizer.points_per_step() as u64 * labels.len() as u64
        );
        self.prompt = prompt;
        Ok(Stepped {
            loss,
            scores,
            lr: self.config.optimizer.step_size(at.step, at.total_steps),
        })
    }

    fn status(&self, stepped: &Stepped) -> String {
        format!(
            "loss {:.4}, step size {:.4}, {} queries",
            stepped.loss, stepped.lr, self.queries.training
        )
    }

    fn validate(&mut self, valid: &BatchLoader, task: &mut dyn Task) -> Result<Evaluation> {
        let (evaluation, spent) =
            evaluate_black_box_with(&mut *self.model, &self.prompt, valid, &self.device, true, task)?;
        self.queries.validation += spent;
        Ok(evaluation)
    }

    fn largest_value(&self) -> Option<f64> {
        let stats = self.prompt.statistics();
        Some(stats.min.abs().max(stats.max.abs()))
    }

    fn selected(&self) -> Prompt {
        self.prompt.clone()
    }

    fn save(&self, dir: &Path, snapshot: Snapshot) -> Result<()> {
        self.prompt.save(dir.join(PROMPT_FILE))?;
        if snapshot == Snapshot::Checkpoint {
            engine::write_file(&dir.join(OPTIMIZER_FILE), &self.optimizer.state())?;
        }
        Ok(())
    }

    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        self.prompt = Prompt::load(dir.join(PROMPT_FILE), &self.device)?;
        let path = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&path).map_err(crate::error::io(&path))?;
        self.optimizer = ZerothOrderOptimizer::new(self.config.optimizer.clone())
            .with_state(&bytes)
            .map_err(|reason| TrainError::Checkpoint {
                path,
                reason: format!("unreadable optimiser state: {reason}"),
            })?;
        self.queries = Queries {
            training: state.queries,
            validation: state.validation_queries,
        };
        Ok(())
    }

    fn load_selected(&self, dir: &Path) -> Result<Prompt> {
        Ok(Prompt::load(dir.join(PROMPT_FILE), &self.device)?)
    }

    fn queries(&self) -> Option<Queries> {
        Some(self.queries)
    }
}

impl BlackBoxTrained {
    /// Evaluates the selected prompt on `data` (the test split, once, at the end) through `model`,
    /// with and without it, with every query counted, and records the result in the run's
    /// metrics log.
    pub fn evaluate<M: BlackBoxModel + ?Sized>(
        &self,
        model: &mut M,
        data: Arc<PreparedDataset>,
        batch_size: usize,
    ) -> Result<BlackBoxReport> {
        let (prompted, unprompted, spent) =
            report(model, &self.prompt, data.clone(), batch_size, &self.device)?;
        let report = BlackBoxReport {
            classes: data.classes.clone(),
            prompted,
            unprompted,
            training_queries: self.queries,
            validation_queries: self.validation_queries,
            evaluation_queries: spent,
        };
        if let Some(run) = &self.run_dir {
            run.append_final_evaluation(&data.source, &report)?;
        }
        Ok(report)
    }
}
