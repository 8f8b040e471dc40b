//! The black-box training loop: the white-box [`Trainer`](crate::Trainer)'s harness (validation
//! selection, crash-safe checkpoints with exact resume, metrics and curves) around zeroth-order
//! steps that only query the model. Every image sent to the model is counted; a query budget stops
//! the run before the first step that would exceed it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::config::Config;
use burn::prelude::*;
use vprompt_data::{BatchLoader, PreparedDataset};
use vprompt_prompt::{Phase, Prompt, VisualPrompt};

use crate::blackbox::{
    BlackBoxModel, BlackBoxReport, check_prompt, cross_entropy, evaluate_black_box, query_checked, report,
};
use crate::error::{Result, TrainError};
use crate::evaluate::Tally;
use crate::run::{Checkpoint, CheckpointState, EpochRecord, RunDir};
use crate::zeroth_order::{ZerothOrderConfig, ZerothOrderOptimizer};

/// Everything about a black-box training run except the model, the prompt and the data.
#[derive(Config, Debug)]
pub struct BlackBoxConfig {
    /// Epochs over the training split.
    pub epochs: usize,
    /// The zeroth-order optimiser.
    pub optimizer: ZerothOrderConfig,
    /// Images per batch; a step costs `batch * points_per_step` queries.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Seed of the batch order and of the perturbations.
    #[config(default = 0)]
    pub seed: u64,
    /// Evaluate on the validation split every this many epochs (and after the last).
    #[config(default = 1)]
    pub eval_every: usize,
    /// Print progress to stderr every this many steps (0: only per epoch).
    #[config(default = 10)]
    pub log_every: u64,
    /// Most training queries (images sent to the model by training steps) the run may spend. A step
    /// runs only if its whole cost fits, so the run never exceeds the budget. Validation queries
    /// are counted separately and are not limited.
    #[config(default = "None")]
    pub query_budget: Option<u64>,
    /// Most images per call to the model: the perturbed copies of a batch are sent in chunks of
    /// this size.
    #[config(default = 256)]
    pub query_batch: usize,
}

impl BlackBoxConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::InvalidConfig(m.into()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("the batch size must be at least 1");
        }
        if self.eval_every == 0 {
            return bad("eval_every must be at least 1");
        }
        if self.query_batch == 0 {
            return bad("query_batch must be at least 1");
        }
        if self.query_budget == Some(0) {
            return bad("a query budget must be at least 1");
        }
        self.optimizer.validate()
    }
}

/// Trains a prompt through a [`BlackBoxModel`], with queries only.
#[derive(Debug, Clone)]
pub struct BlackBoxTrainer {
    config: BlackBoxConfig,
    device: Device,
    run_dir: Option<PathBuf>,
    stop_after_steps: Option<u64>,
    quiet: bool,
}

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
    /// Whether the run stopped at [`BlackBoxTrainer::stop_after_steps`].
    pub interrupted: bool,
    device: Device,
    run_dir: Option<RunDir>,
}

struct State {
    prompt: Prompt,
    optimizer: ZerothOrderOptimizer,
    checkpoint: CheckpointState,
    history: Vec<EpochRecord>,
    best_snapshot: Option<Prompt>,
}

impl BlackBoxTrainer {
    /// A trainer for `config`; images and the prompt live on `device` (a plain device: nothing is
    /// differentiated).
    pub fn new(config: BlackBoxConfig, device: &Device) -> Self {
        Self {
            config,
            device: device.clone(),
            run_dir: None,
            stop_after_steps: None,
            quiet: false,
        }
    }

    /// Writes checkpoints, metrics and curves (including `accuracy-vs-queries.png`) to `dir`, and
    /// resumes from its checkpoint if it has one.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Stops after this many steps in total, as if the process were killed there. For tests.
    pub fn stop_after_steps(mut self, steps: u64) -> Self {
        self.stop_after_steps = Some(steps);
        self
    }

    /// No progress lines on stderr.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    fn log(&self, line: impl FnOnce() -> String) {
        if !self.quiet {
            eprintln!("{}", line());
        }
    }

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
        for (name, data) in [("training", &train), ("validation", &valid)] {
            if data.size != prompt.input_size() {
                return Err(TrainError::InvalidConfig(format!(
                    "the {name} split is prepared at {:?}, the prompt takes {:?}",
                    data.size,
                    prompt.input_size()
                )));
            }
            if data.classes.len() != model.num_classes() {
                return Err(TrainError::InvalidConfig(format!(
                    "the {name} split has {} classes, the model {}",
                    data.classes.len(),
                    model.num_classes()
                )));
            }
        }
        let loader = BatchLoader::new(train, self.config.batch_size)?.shuffled(self.config.seed);
        let valid_loader = BatchLoader::new(valid, self.config.batch_size)?;
        let steps_per_epoch = loader.batches_per_epoch() as u64;
        let total_steps = steps_per_epoch * self.config.epochs as u64;
        let points = self.config.optimizer.points_per_step() as u64;
        let run = self.run_dir.as_ref().map(RunDir::create).transpose()?;
        if let Some(run) = &run {
            let json = serde_json::json!({ "black_box": serde_json::to_value(&self.config).expect("configs serialise") });
            run.check_or_write_config(&json.to_string())?;
        }
        let mut state = self.initial_state(run.as_ref(), prompt.fork(&self.device))?;
        let (mut interrupted, mut exhausted) = (false, false);

        'epochs: for epoch in state.checkpoint.epochs_done..self.config.epochs {
            let started = Instant::now();
            let (mut loss_sum, mut tally, mut lr, mut taken) =
                (0.0f64, Tally::new(model.num_classes()), 0.0, 0u64);
            for (k, batch) in loader.epoch(epoch as u64, 0, &self.device).enumerate() {
                let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
                let cost = points * labels.len() as u64;
                if self
                    .config
                    .query_budget
                    .is_some_and(|budget| state.checkpoint.queries + cost > budget)
                {
                    exhausted = true;
                    break;
                }
                let step = state.checkpoint.step;
                lr = self.config.optimizer.step_size(step, total_steps);
                let before = state.checkpoint.queries;
                let (prompt, loss, scores) = self.step(
                    model,
                    &state.prompt,
                    &mut state.optimizer,
                    batch.images,
                    &labels,
                    step,
                    total_steps,
                    &mut state.checkpoint.queries,
                    epoch,
                )?;
                debug_assert_eq!(state.checkpoint.queries - before, cost);
                state.prompt = prompt;
                state.checkpoint.step += 1;
                taken += 1;
                loss_sum += loss * labels.len() as f64;
                tally.add(&scores, &labels);
                if self.config.log_every > 0 && (k as u64 + 1).is_multiple_of(self.config.log_every) {
                    let rate = tally.finish().count as f64 / started.elapsed().as_secs_f64();
                    self.log(|| {
                        format!(
                            "epoch {}/{} batch {}/{} loss {loss:.4} step size {lr:.4} queries {} ({rate:.1} img/s)",
                            epoch + 1,
                            self.config.epochs,
                            k + 1,
                            steps_per_epoch,
                            state.checkpoint.queries
                        )
                    });
                }
                if self
                    .stop_after_steps
                    .is_some_and(|limit| state.checkpoint.step >= limit)
                {
                    interrupted = true;
                    break 'epochs;
                }
            }
            if exhausted && taken == 0 {
                break;
            }
            let train_eval = tally.finish();
            let seconds = started.elapsed().as_secs_f64();
            let evaluate_now =
                exhausted || (epoch + 1) % self.config.eval_every == 0 || epoch + 1 == self.config.epochs;
            let valid_eval = if evaluate_now {
                let (eval, spent) =
                    evaluate_black_box(model, &state.prompt, &valid_loader, &self.device, true)?;
                state.checkpoint.validation_queries += spent;
                Some(eval)
            } else {
                None
            };
            state.checkpoint.epochs_done = epoch + 1;
            if let Some(v) = &valid_eval
                && state.checkpoint.best.is_none_or(|(_, best)| v.top1 > best)
            {
                state.checkpoint.best = Some((epoch + 1, v.top1));
                state.best_snapshot = Some(state.prompt.clone());
                if let Some(run) = &run {
                    run.save_best(epoch + 1, &state.prompt, None)?;
                }
            }
            let record = EpochRecord {
                epoch: epoch + 1,
                step: state.checkpoint.step,
                lr,
                train_loss: loss_sum / train_eval.count.max(1) as f64,
                train_top1: train_eval.top1,
                valid_loss: valid_eval.as_ref().map(|v| v.loss),
                valid_top1: valid_eval.as_ref().map(|v| v.top1),
                valid_top5: valid_eval.as_ref().map(|v| v.top5),
                images_per_second: train_eval.count as f64 / seconds,
                queries: Some(state.checkpoint.queries),
            };
            self.log(|| {
                format!(
                    "epoch {}/{} ({}): train loss {:.4} top-1 {:.2}%{}, {} training queries{}",
                    record.epoch,
                    self.config.epochs,
                    self.config.optimizer.name(),
                    record.train_loss,
                    100.0 * record.train_top1,
                    record
                        .valid_top1
                        .map_or(String::new(), |v| format!(", validation top-1 {:.2}%", 100.0 * v)),
                    state.checkpoint.queries,
                    if exhausted { " (budget spent)" } else { "" }
                )
            });
            state.history.push(record.clone());
            if let Some(run) = &run {
                run.save_checkpoint(&state.checkpoint, &state.prompt, None, &state.optimizer.state())?;
                run.append_metrics(&record)?;
                run.plot(&state.history)?;
            }
            if exhausted {
                break;
            }
        }

        let prompt = match state.best_snapshot.take() {
            Some(best) => best,
            None => match run
                .as_ref()
                .map(|r| r.load_best(&self.device))
                .transpose()?
                .flatten()
            {
                Some((best, _)) if state.checkpoint.best.is_some() => best,
                _ => state.prompt,
            },
        };
        Ok(BlackBoxTrained {
            prompt,
            history: state.history,
            best: state.checkpoint.best,
            steps: state.checkpoint.step,
            queries: state.checkpoint.queries,
            validation_queries: state.checkpoint.validation_queries,
            budget_exhausted: exhausted,
            interrupted,
            device: self.device.clone(),
            run_dir: run,
        })
    }

    /// One zeroth-order step on one batch: every candidate point of the step prompts the batch, all
    /// of them go to the model in chunks of `query_batch` images, and the per-point mean
    /// cross-entropy drives the estimate. Returns the updated prompt, the loss (at `w` for RGF, the
    /// mean over the points for SPSA) and the scores of the first point (`w` for RGF,
    /// `w + c_k Delta_1` for SPSA) for the training accuracy.
    #[allow(clippy::too_many_arguments)]
    fn step<M: BlackBoxModel + ?Sized>(
        &self,
        model: &mut M,
        prompt: &Prompt,
        optimizer: &mut ZerothOrderOptimizer,
        images: Tensor<4>,
        labels: &[usize],
        step: u64,
        total_steps: u64,
        queries: &mut u64,
        epoch: usize,
    ) -> Result<(Prompt, f64, Vec<f32>)> {
        let base = prompt.unprompted(images)?;
        let batch = labels.len();
        let learned = prompt.learned();
        let shape = learned.dims();
        let mut w = crate::blackbox::host(learned);
        let mask: Vec<bool> = crate::blackbox::host(prompt.learned_mask())
            .into_iter()
            .map(|m| m != 0.0)
            .collect();
        let space = prompt.space();
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
                    prompted.push(space.add(base.clone(), candidate.perturbation(Phase::Train { step })));
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

    fn initial_state(&self, run: Option<&RunDir>, prompt: Prompt) -> Result<State> {
        let optimizer = ZerothOrderOptimizer::new(self.config.optimizer.clone());
        if let Some(run) = run
            && let Some(Checkpoint {
                state: checkpoint,
                prompt,
                optimizer: bytes,
                ..
            }) = run.load_checkpoint(&self.device)?
        {
            let optimizer = optimizer
                .with_state(&bytes)
                .map_err(|reason| TrainError::Checkpoint {
                    path: run.path().to_path_buf(),
                    reason: format!("unreadable optimiser state: {reason}"),
                })?;
            let history = run.metrics_until(checkpoint.epochs_done)?;
            self.log(|| {
                format!(
                    "resuming {} after epoch {} (step {}, {} queries)",
                    run.path().display(),
                    checkpoint.epochs_done,
                    checkpoint.step,
                    checkpoint.queries
                )
            });
            return Ok(State {
                prompt,
                optimizer,
                checkpoint,
                history,
                best_snapshot: None,
            });
        }
        if let Some(run) = run {
            run.metrics_until(0)?;
        }
        Ok(State {
            prompt,
            optimizer,
            checkpoint: CheckpointState {
                epochs_done: 0,
                step: 0,
                best: None,
                queries: 0,
                validation_queries: 0,
            },
            history: Vec::new(),
            best_snapshot: None,
        })
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
            run.append_metrics(&serde_json::json!({ "final_evaluation": data.source, "report": report }))?;
        }
        Ok(report)
    }
}
