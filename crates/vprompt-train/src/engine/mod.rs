//! The one training engine. It owns a run from start to end: the splits and their checks,
//! batching, the epochs, validation and selection, the epoch records, checkpoints, metrics and
//! curves, the final choice, and resuming. What is learned and how one step learns it is a
//! [`Method`]: gradient steps on a prompt ([`crate::gradient`]), zeroth-order steps through a
//! black box ([`crate::black_box`]), or a linear probe on frozen features ([`crate::probe`]).
//!
//! A trait rather than an enum: each method keeps its own state (an autodiff prompt and burn's
//! optimiser, host-side values and a query counter, cached features) and its own types (a
//! mutable black-box model, a backbone type parameter), and the engine needs only the handful
//! of operations below; an enum would put all three states in one type and match on it in every
//! operation.
//!
//! Why vprompt has its own loop and not burn-train's `Learner`: batches and random prompt
//! locations are pure functions of `(seed, epoch, step)`, so a resumed run is bit-identical (the
//! Learner's data loader reshuffles from one RNG stream and its checkpoints restart the
//! schedule); data-driven label mappings are refitted between epochs; zeroth-order steps have no
//! gradient at all; the frozen backbone stays on the plain device; and selection uses a
//! validation split with the test split kept out of training entirely.

mod run_dir;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vprompt_core::{Lines, Progress, Quiet, Task};
use vprompt_data::{BatchLoader, PreparedDataset};

pub(crate) use run_dir::write_atomic as write_file;
pub use run_dir::{
    Checkpoint, CheckpointState, EpochRecord, MAPPING_FILE, OPTIMIZER_FILE, PROBE_FILE, PROMPT_FILE, RunDir,
};

use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Tally};

/// A method's config, as the engine reads it: the loop's settings, and the section it is recorded
/// under in the run directory's `config.json`.
pub(crate) trait LoopConfig: serde::Serialize + serde::de::DeserializeOwned + PartialEq {
    /// Section name in `config.json` (`training`, `black_box`, `linear_probe`).
    const SECTION: &'static str;
    /// The loop's settings.
    fn settings(&self) -> LoopSettings;
}

/// Implements [`LoopConfig`] for configs with the fields `epochs`, `batch_size`, `seed`,
/// `eval_every` and `log_every`.
macro_rules! loop_config {
    ($($config:ty => $section:literal),+ $(,)?) => {$(
        impl $crate::engine::LoopConfig for $config {
            const SECTION: &'static str = $section;
            fn settings(&self) -> $crate::engine::LoopSettings {
                $crate::engine::LoopSettings {
                    epochs: self.epochs,
                    batch_size: self.batch_size,
                    seed: self.seed,
                    eval_every: self.eval_every,
                    log_every: self.log_every,
                    divergence_limit: Some(self.divergence_limit),
                }
            }
        }
    )+};
}
pub(crate) use loop_config;

/// The loop's settings, common to every method (each config has them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopSettings {
    /// Epochs over the training split.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// Validate every this many epochs (and after the last).
    pub eval_every: usize,
    /// Plain-line progress: a line every this many steps.
    pub log_every: u64,
    /// The run stops when a learned value's magnitude exceeds this after an epoch
    /// ([`Method::largest_value`]); `None`: never.
    pub divergence_limit: Option<f64>,
}

/// Where a step is in the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    /// Epoch, counted from 0.
    pub epoch: usize,
    /// Global step, counted from 0.
    pub step: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
}

/// What one step reports.
#[derive(Debug, Clone)]
pub(crate) struct Stepped {
    /// Mean loss of the batch.
    pub loss: f64,
    /// Scores of the batch, `[batch * classes]` row-major, ranked for the training accuracy.
    pub scores: Vec<f32>,
    /// Learning rate (or step size) of the step.
    pub lr: f64,
}

/// Which snapshot of a method's state is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Snapshot {
    /// Everything needed to continue: the learned values and the optimiser's state.
    Checkpoint,
    /// What selection keeps: the learned values.
    Best,
}

/// Queries a black-box run has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Queries {
    /// By training steps.
    pub training: u64,
    /// By validation.
    pub validation: u64,
}

/// A batch that knows which images of the training split it holds.
pub(crate) trait Indexed {
    /// Positions of the batch's images in the dataset.
    fn indices(&self) -> &[usize];
}

impl Indexed for vprompt_data::Batch {
    fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Indexed for Vec<usize> {
    fn indices(&self) -> &[usize] {
        self
    }
}

/// What the engine needs from a way of training. Everything else (the loop, selection,
/// checkpoints, resume, records) is the engine's.
pub(crate) trait Method {
    /// What selection keeps and the run returns.
    type Selected;
    /// What one step consumes.
    type Batch: Indexed;

    /// The image size the splits must be prepared at.
    fn input_size(&self) -> [usize; 2];
    /// Number of classes.
    fn num_classes(&self) -> usize;
    /// The batches of `epoch`, in `loader`'s (seeded) order.
    fn batches(&self, loader: &BatchLoader, epoch: u64) -> Box<dyn Iterator<Item = Self::Batch>>;
    /// Whether a step on `images` images fits the method's budget.
    fn affordable(&self, _images: usize) -> bool {
        true
    }
    /// Work before epoch `epoch` (counted from 0), e.g. refitting a label mapping.
    fn begin_epoch(&mut self, _epoch: usize, _train: &BatchLoader, _progress: &dyn Progress) -> Result<()> {
        Ok(())
    }
    /// One step on one batch, whose images have `labels`.
    fn step(&mut self, batch: Self::Batch, labels: &[usize], at: At) -> Result<Stepped>;
    /// Evaluates the current state on the validation split.
    fn validate(&mut self, valid: &BatchLoader, task: &mut dyn Task) -> Result<Evaluation>;
    /// The current state, as selection keeps it.
    fn selected(&self) -> Self::Selected;
    /// Writes a snapshot of the current state into the (new, empty) directory `dir`.
    fn save(&self, dir: &Path, snapshot: Snapshot) -> Result<()>;
    /// Restores the state from checkpoint directory `dir` (written by `save`).
    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()>;
    /// Reads what `save(.., Snapshot::Best)` wrote to `dir`.
    fn load_selected(&self, dir: &Path) -> Result<Self::Selected>;
    /// Queries spent so far (black-box methods only).
    fn queries(&self) -> Option<Queries> {
        None
    }
    /// The largest magnitude among the learned values (a prompt's), for divergence checks;
    /// `None` for methods whose values have no natural range.
    fn largest_value(&self) -> Option<f64> {
        None
    }
    /// The status shown beside a step's progress.
    fn status(&self, stepped: &Stepped) -> String {
        format!("loss {:.4}, lr {:.4}", stepped.loss, stepped.lr)
    }
}

/// Told of each epoch as the engine records it: where curves, dashboards or other reports of a
/// run are made (the engine itself never draws; the run layer's `Curves` draws a run's curves).
pub trait EpochObserver: Send + Sync {
    /// Called after the epoch `history.last()` is recorded (and, in a run with a directory
    /// `run_dir`, checkpointed), with every record of the run so far. An error stops the run; the
    /// checkpoint is already written, so it resumes from there.
    fn epoch_recorded(
        &self,
        history: &[EpochRecord],
        run_dir: Option<&Path>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Where and how a run is kept, whatever it trains: the run directory, an optional step limit,
/// progress reporting, observers of its epochs.
#[derive(Clone, Default)]
pub(crate) struct RunOptions {
    pub run_dir: Option<PathBuf>,
    pub stop_after_steps: Option<u64>,
    pub quiet: bool,
    pub progress: Option<Arc<dyn Progress>>,
    pub observers: Vec<Arc<dyn EpochObserver>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_dir", &self.run_dir)
            .field("stop_after_steps", &self.stop_after_steps)
            .field("quiet", &self.quiet)
            .field("progress", &self.progress.as_ref().map(|_| "custom"))
            .field("observers", &self.observers.len())
            .finish()
    }
}

impl RunOptions {
    /// The progress reporter: none when quiet, the caller's, or plain lines every `log_every` steps.
    pub(crate) fn progress(&self, log_every: u64) -> Arc<dyn Progress> {
        match (&self.progress, self.quiet) {
            (_, true) => Arc::new(Quiet),
            (Some(p), false) => p.clone(),
            (None, false) => Arc::new(Lines::every(log_every)),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub(crate) struct Outcome<S> {
    /// The state selected on the validation split: the best validation top-1, or the last if the
    /// run never validated.
    pub selected: S,
    /// The epoch (1-based) whose state `selected` is.
    pub selected_epoch: usize,
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// Best validation top-1 and its epoch (1-based).
    pub best: Option<(usize, f64)>,
    /// Steps taken.
    pub steps: u64,
    /// Queries spent (black-box runs).
    pub queries: Queries,
    /// Whether the run stopped at the step limit.
    pub interrupted: bool,
    /// Whether the method's budget ended the run.
    pub budget_exhausted: bool,
    /// The run directory.
    pub run_dir: Option<RunDir>,
}

/// Checks that the splits fit the method and each other: prepared at its input size, with its
/// number of classes, and the same class names in the same order.
fn check_splits(
    input_size: [usize; 2],
    classes: usize,
    train: &PreparedDataset,
    valid: Option<&PreparedDataset>,
) -> Result<()> {
    for (name, data) in std::iter::once(("training", train)).chain(valid.map(|v| ("validation", v))) {
        if data.size != input_size {
            return Err(TrainError::Mismatch(format!(
                "the {name} split is prepared at {:?}, the model takes {input_size:?} (prepare it at the \
                 prompt's input size)",
                data.size
            )));
        }
        if data.classes.len() != classes {
            return Err(TrainError::Mismatch(format!(
                "the {name} split has {} classes, the model {classes}",
                data.classes.len()
            )));
        }
    }
    if let Some(valid) = valid
        && train.classes != valid.classes
    {
        return Err(TrainError::Mismatch(format!(
            "the training and validation splits name other classes: {:?} against {:?}",
            train.classes, valid.classes
        )));
    }
    Ok(())
}

/// Runs `method` with the settings of `config` on `train`, selecting on `valid`; without a
/// validation split (the released code's setting), the last epoch's state is selected.
pub(crate) fn run<C: LoopConfig, M: Method>(
    options: &RunOptions,
    config: &C,
    method: &mut M,
    train: Arc<PreparedDataset>,
    valid: Option<Arc<PreparedDataset>>,
) -> Result<Outcome<M::Selected>> {
    let settings = config.settings();
    check_splits(
        method.input_size(),
        method.num_classes(),
        &train,
        valid.as_deref(),
    )?;
    let progress = options.progress(settings.log_every);
    let loader = BatchLoader::new(train, settings.batch_size)?.shuffled(settings.seed);
    let valid_loader = valid
        .map(|valid| BatchLoader::new(valid, settings.batch_size))
        .transpose()?;
    let steps_per_epoch = loader.batches_per_epoch() as u64;
    let total_steps = steps_per_epoch * settings.epochs as u64;
    let run = options.run_dir.as_ref().map(RunDir::create).transpose()?;
    if let Some(run) = &run {
        run.check_or_write_config(C::SECTION, config)?;
    }

    // Resume from the run directory's checkpoint, if it has one. Without one the run starts at
    // epoch 1, and the first record written replaces whatever an unfinished attempt left in the
    // metrics.
    let mut state = CheckpointState::default();
    let mut history = Vec::new();
    if let Some(run) = &run
        && let Some((saved, dir)) = run.checkpoint()?
    {
        method.restore(&dir, &saved)?;
        history = run.metrics_until(saved.epochs_done)?;
        progress.line(&format!(
            "resuming {} after epoch {} (step {})",
            run.path().display(),
            saved.epochs_done,
            saved.step
        ));
        state = saved;
    }

    let mut best_snapshot = None;
    let (mut interrupted, mut exhausted) = (false, false);
    'epochs: for epoch in state.epochs_done..settings.epochs {
        method.begin_epoch(epoch, &loader, progress.as_ref())?;
        let started = Instant::now();
        let (mut loss_sum, mut tally, mut lr, mut taken) =
            (0.0f64, Tally::new(method.num_classes()), 0.0, 0u64);
        {
            let mut task = progress.task(
                &format!("epoch {}/{}", epoch + 1, settings.epochs),
                loader.data().len() as u64,
                "images",
            );
            for batch in method.batches(&loader, epoch as u64) {
                let labels: Vec<usize> = batch.indices().iter().map(|&i| loader.data().labels[i]).collect();
                if !method.affordable(labels.len()) {
                    exhausted = true;
                    break;
                }
                let at = At {
                    epoch,
                    step: state.step,
                    steps_per_epoch,
                    total_steps,
                };
                let stepped = method.step(batch, &labels, at)?;
                state.step += 1;
                taken += 1;
                lr = stepped.lr;
                loss_sum += stepped.loss * labels.len() as f64;
                tally.add(&stepped.scores, &labels);
                task.advance(labels.len() as u64, &|| method.status(&stepped));
                if options.stop_after_steps.is_some_and(|limit| state.step >= limit) {
                    interrupted = true;
                    break 'epochs;
                }
            }
        }
        if exhausted && taken == 0 {
            break;
        }
        // Before this epoch's checkpoint: a diverged state is never saved over the last good one.
        if let (Some(limit), Some(value)) = (settings.divergence_limit, method.largest_value())
            && (value.is_nan() || value > limit)
        {
            return Err(TrainError::Diverged {
                value,
                limit,
                epoch: epoch + 1,
                step: state.step,
            });
        }
        let train_eval = tally.finish();
        let seconds = started.elapsed().as_secs_f64();
        let validate_now =
            exhausted || (epoch + 1) % settings.eval_every == 0 || epoch + 1 == settings.epochs;
        let valid_eval = match &valid_loader {
            Some(valid_loader) if validate_now => {
                let mut task = progress.task("validation", valid_loader.data().len() as u64, "images");
                Some(method.validate(valid_loader, task.as_mut())?)
            }
            _ => None,
        };
        state.epochs_done = epoch + 1;
        if let Some(v) = &valid_eval
            && state.best.is_none_or(|(_, best)| v.top1 > best)
        {
            state.best = Some((epoch + 1, v.top1));
            best_snapshot = Some(method.selected());
            if let Some(run) = &run {
                run.save_best(epoch + 1, |dir| method.save(dir, Snapshot::Best))?;
            }
        } else if valid_loader.is_none()
            && let Some(run) = &run
        {
            // No validation: the selected state is the last epoch's, kept like a best one.
            run.save_best(epoch + 1, |dir| method.save(dir, Snapshot::Best))?;
        }
        let queries = method.queries();
        if let Some(q) = queries {
            state.queries = q.training;
            state.validation_queries = q.validation;
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            step: state.step,
            lr,
            train_loss: loss_sum / train_eval.count.max(1) as f64,
            train_top1: train_eval.top1,
            valid_loss: valid_eval.as_ref().map(|v| v.loss),
            valid_top1: valid_eval.as_ref().map(|v| v.top1),
            valid_top5: valid_eval.as_ref().map(|v| v.top5),
            images_per_second: train_eval.count as f64 / seconds,
            queries: queries.map(|q| q.training),
        };
        progress.line(&record.summary(settings.epochs, exhausted));
        history.push(record.clone());
        if let Some(run) = &run {
            // The record first: a kill between the two leaves a record the resume drops (it keeps
            // the records up to the checkpoint's epoch) and writes again, never a checkpoint whose
            // epoch has no record.
            run.append_metrics(&record)?;
            run.save_checkpoint(&state, |dir| method.save(dir, Snapshot::Checkpoint))?;
        }
        for observer in &options.observers {
            observer
                .epoch_recorded(&history, run.as_ref().map(RunDir::path))
                .map_err(TrainError::Observer)?;
        }
        if exhausted {
            break;
        }
    }

    let selected = match best_snapshot {
        Some(best) => best,
        None => match (&run, state.best) {
            (Some(run), Some(_)) => match run.best_dir()? {
                Some(dir) => method.load_selected(&dir)?,
                None => method.selected(),
            },
            _ => method.selected(),
        },
    };
    Ok(Outcome {
        selected,
        selected_epoch: state.best.map_or(state.epochs_done, |(epoch, _)| epoch),
        history,
        best: state.best,
        steps: state.step,
        queries: method.queries().unwrap_or_default(),
        interrupted,
        budget_exhausted: exhausted,
        run_dir: run,
    })
}
