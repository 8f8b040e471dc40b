//! The training loop. It is vprompt's own rather than burn-train's `Learner` because visual
//! prompting needs things the Learner does not give: batches and random prompt locations that are
//! pure functions of `(seed, epoch, step)` so that a resumed run is bit-identical (the Learner's
//! data loader reshuffles from one RNG stream and its checkpoints restart the schedule), refitting
//! data-driven label mappings between epochs (ILM, BLM), EVP's normalised-gradient update, a frozen
//! backbone kept on the plain device, and selection on a validation split with the test split kept
//! out of training entirely. It uses burn's optimisers and their checkpointable state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_data::{BatchLoader, PreparedDataset};
use vprompt_mapping::{FrequencyMatrix, LabelMappingConfig, Mapping, OutputMapping};
use vprompt_prompt::{Phase, Prompt};

use crate::classifier::PromptedClassifier;
use crate::config::TrainingConfig;
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report, Tally, evaluate};
use crate::optimizer::PromptOptimizer;
use crate::run::{CheckpointState, EpochRecord, RunDir};
use crate::schedule::learning_rate;

/// Trains a prompt. Build it with the config and the plain device the backbone lives on; the prompt
/// trains on that device's autodiff twin.
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainingConfig,
    device: Device,
    run_dir: Option<PathBuf>,
    mapping: Option<LabelMappingConfig>,
    stop_after_steps: Option<u64>,
    quiet: bool,
}

/// The result of training.
#[derive(Debug, Clone)]
pub struct Trained<B: Backbone> {
    /// The classifier with the prompt (and mapping) selected on the validation split: the best
    /// validation top-1, or the last epoch's if the run never evaluated.
    pub classifier: PromptedClassifier<B>,
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// Best validation top-1 and its epoch (1-based).
    pub best: Option<(usize, f64)>,
    /// Optimisation steps taken.
    pub steps: u64,
    /// Whether the run stopped at [`Trainer::stop_after_steps`] before finishing.
    pub interrupted: bool,
    device: Device,
    run_dir: Option<RunDir>,
}

struct State {
    prompt: Prompt,
    mapping: Mapping,
    optimizer: PromptOptimizer,
    checkpoint: CheckpointState,
    history: Vec<EpochRecord>,
    best_snapshot: Option<(Prompt, Mapping)>,
}

impl Trainer {
    /// A trainer for `config`, with the backbone and data on `device` (a plain device such as
    /// `Device::flex()`; the prompt trains on `device.autodiff()`).
    pub fn new(config: TrainingConfig, device: &Device) -> Self {
        Self {
            config,
            device: device.clone(),
            run_dir: None,
            mapping: None,
            stop_after_steps: None,
            quiet: false,
        }
    }

    /// Writes checkpoints, metrics and curves to `dir`, and resumes from its checkpoint if it has
    /// one.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Fits a data-driven label mapping (FLM, ILM, BLM, BLM+) before training and refits it as the
    /// config says; the classifier's mapping is replaced.
    pub fn with_mapping(mut self, mapping: LabelMappingConfig) -> Self {
        self.mapping = Some(mapping);
        self
    }

    /// Stops after this many optimisation steps in total, as if the process were killed there (no
    /// checkpoint is written at that point). For tests of resumption and for timing.
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

    /// Trains `classifier`'s prompt on `train`, selecting on `valid`. Neither split may be the test
    /// split: evaluate on it once, afterwards, with [`Trained::evaluate`].
    pub fn train<B: Backbone>(
        &self,
        classifier: PromptedClassifier<B>,
        train: Arc<PreparedDataset>,
        valid: Arc<PreparedDataset>,
    ) -> Result<Trained<B>> {
        self.config.validate()?;
        for (name, data) in [("training", &train), ("validation", &valid)] {
            if data.size != classifier.input_size() {
                return Err(TrainError::InvalidConfig(format!(
                    "the {name} split is prepared at {:?}, the classifier takes {:?} (prepare it at the prompt's input size)",
                    data.size,
                    classifier.input_size()
                )));
            }
            if data.classes.len() != classifier.num_classes() {
                return Err(TrainError::InvalidConfig(format!(
                    "the {name} split has {} classes, the mapping {}",
                    data.classes.len(),
                    classifier.num_classes()
                )));
            }
        }
        if let Some(m) = &self.mapping {
            m.validate(classifier.backbone.output_dim(), classifier.num_classes())?;
        }
        let ad = self.device.clone().autodiff();
        let loader = BatchLoader::new(train.clone(), self.config.batch_size)?.shuffled(self.config.seed);
        let fit_loader = BatchLoader::new(train, self.config.batch_size)?;
        let valid_loader = BatchLoader::new(valid, self.config.batch_size)?;
        let steps_per_epoch = loader.batches_per_epoch() as u64;
        let total_steps = steps_per_epoch * self.config.epochs as u64;
        let run = self.run_dir.as_ref().map(RunDir::create).transpose()?;
        if let Some(run) = &run {
            run.check_or_write_config(&self.run_config_json())?;
        }

        let PromptedClassifier {
            prompt,
            backbone,
            mapping,
        } = classifier;
        let mut state = self.initial_state(run.as_ref(), prompt.fork(&ad).train(), mapping, &ad)?;
        let mut interrupted = false;

        'epochs: for epoch in state.checkpoint.epochs_done..self.config.epochs {
            // Data-driven mappings: fitted before the first epoch, refitted every k epochs.
            if let Some(config) = &self.mapping
                && config.needs_fit()
                && (epoch == 0 || config.refit_every().is_some_and(|k| epoch % k == 0))
            {
                let eval = PromptedClassifier {
                    prompt: state.prompt.valid(),
                    backbone: backbone.clone(),
                    mapping: state.mapping.clone(),
                };
                state.mapping = fit_mapping(&eval, config, &fit_loader, &self.device)?;
                self.log(|| format!("epoch {}: {} mapping fitted", epoch + 1, config.method()));
            }
            let started = Instant::now();
            let mapping_ad = state.mapping.clone();
            let (mut loss_sum, mut tally, mut lr) = (0.0f64, Tally::new(mapping_ad.num_classes()), 0.0);
            for (k, batch) in loader.epoch(epoch as u64, 0, &ad).enumerate() {
                let step = state.checkpoint.step;
                lr = learning_rate(
                    &self.config.schedule,
                    self.config.learning_rate,
                    step,
                    steps_per_epoch,
                    total_steps,
                );
                let mut model = PromptedClassifier {
                    prompt: state.prompt.clone(),
                    backbone: backbone.clone(),
                    mapping: mapping_ad.clone(),
                };
                let (value, logits) = train_step(
                    &mut model,
                    &mut state.optimizer,
                    batch.images,
                    batch.labels,
                    lr,
                    step,
                )
                .map_err(|e| match e {
                    TrainError::NonFiniteLoss { loss, step, .. } => TrainError::NonFiniteLoss {
                        loss,
                        step,
                        epoch: epoch + 1,
                    },
                    e => e,
                })?;
                state.prompt = model.prompt;
                state.checkpoint.step += 1;
                loss_sum += value as f64 * batch.indices.len() as f64;
                let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
                tally.add(
                    &logits.into_data().try_into_vec_as::<f32>().expect("float"),
                    &labels,
                );
                if self.config.log_every > 0 && (k as u64 + 1).is_multiple_of(self.config.log_every) {
                    let rate = tally.finish().count as f64 / started.elapsed().as_secs_f64();
                    self.log(|| {
                        format!(
                            "epoch {}/{} batch {}/{} loss {:.4} lr {lr:.4} {rate:.1} img/s",
                            epoch + 1,
                            self.config.epochs,
                            k + 1,
                            steps_per_epoch,
                            value
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
            let train_eval = tally.finish();
            let seconds = started.elapsed().as_secs_f64();
            let evaluate_now = (epoch + 1) % self.config.eval_every == 0 || epoch + 1 == self.config.epochs;
            let valid_eval = if evaluate_now {
                let eval = PromptedClassifier {
                    prompt: state.prompt.valid(),
                    backbone: backbone.clone(),
                    mapping: state.mapping.clone(),
                };
                Some(evaluate(&eval, &valid_loader, &self.device, true)?)
            } else {
                None
            };
            state.checkpoint.epochs_done = epoch + 1;
            if let Some(v) = &valid_eval
                && state.checkpoint.best.is_none_or(|(_, best)| v.top1 > best)
            {
                state.checkpoint.best = Some((epoch + 1, v.top1));
                state.best_snapshot = Some((state.prompt.valid(), state.mapping.clone()));
                if let Some(run) = &run {
                    run.save_best(epoch + 1, &state.prompt, Some(&state.mapping))?;
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
                queries: None,
            };
            self.log(|| {
                format!(
                    "epoch {}/{}: train loss {:.4} top-1 {:.2}%{} ({:.1} img/s)",
                    record.epoch,
                    self.config.epochs,
                    record.train_loss,
                    100.0 * record.train_top1,
                    record
                        .valid_top1
                        .map_or(String::new(), |v| format!(", validation top-1 {:.2}%", 100.0 * v)),
                    record.images_per_second
                )
            });
            state.history.push(record.clone());
            if let Some(run) = &run {
                run.save_checkpoint(
                    &state.checkpoint,
                    &state.prompt,
                    Some(&state.mapping),
                    &state.optimizer.state()?,
                )?;
                run.append_metrics(&record)?;
                run.plot(&state.history)?;
            }
        }

        let (prompt, mapping) = match state.best_snapshot.take() {
            Some(best) => best,
            None => match run
                .as_ref()
                .map(|r| r.load_best(&self.device))
                .transpose()?
                .flatten()
            {
                Some((prompt, Some(mapping))) if state.checkpoint.best.is_some() => (prompt, mapping),
                _ => (state.prompt.valid(), state.mapping),
            },
        };
        Ok(Trained {
            classifier: PromptedClassifier {
                prompt: prompt.fork(&self.device),
                backbone,
                mapping,
            },
            history: state.history,
            best: state.checkpoint.best,
            steps: state.checkpoint.step,
            interrupted,
            device: self.device.clone(),
            run_dir: run,
        })
    }

    fn run_config_json(&self) -> String {
        serde_json::json!({
            "training": serde_json::to_value(&self.config).expect("configs serialise"),
            "mapping": self.mapping.as_ref().map(|m| serde_json::to_value(m).expect("configs serialise")),
        })
        .to_string()
    }

    fn initial_state(
        &self,
        run: Option<&RunDir>,
        prompt: Prompt,
        mapping: Mapping,
        ad: &Device,
    ) -> Result<State> {
        let optimizer = PromptOptimizer::new(&self.config.optimizer);
        if let Some(run) = run
            && let Some(crate::run::Checkpoint {
                state: checkpoint,
                prompt,
                mapping,
                optimizer: optimizer_state,
            }) = run.load_checkpoint(ad)?
        {
            let mapping = mapping.ok_or_else(|| TrainError::Checkpoint {
                path: run.path().to_path_buf(),
                reason: "the checkpoint has no mapping (is it a black-box run?)".into(),
            })?;
            let optimizer =
                optimizer
                    .with_state(optimizer_state)
                    .map_err(|reason| TrainError::Checkpoint {
                        path: run.path().to_path_buf(),
                        reason: format!("unreadable optimiser state: {reason}"),
                    })?;
            let history = run.metrics_until(checkpoint.epochs_done)?;
            self.log(|| {
                format!(
                    "resuming {} after epoch {} (step {})",
                    run.path().display(),
                    checkpoint.epochs_done,
                    checkpoint.step
                )
            });
            return Ok(State {
                prompt,
                mapping: mapping.fork(&self.device),
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
            mapping: mapping.fork(&self.device),
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

/// One optimisation step on one batch: prompted forward (`Phase::Train { step }`), cross-entropy,
/// backward to the prompt only, update with learning rate `lr`. The classifier's prompt is replaced
/// by the updated one; returns the loss and the batch's logits (detached). A non-finite loss leaves
/// the prompt untouched and returns [`TrainError::NonFiniteLoss`] (with epoch 0: the caller knows
/// the epoch).
///
/// # Shapes
/// - images: `[batch, 3, h, w]` in `[0, 1]`, on the prompt's (autodiff) device
/// - labels: `[batch]`
pub fn train_step<B: Backbone>(
    classifier: &mut PromptedClassifier<B>,
    optimizer: &mut PromptOptimizer,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    lr: f64,
    step: u64,
) -> Result<(f32, Tensor<2>)> {
    let logits = classifier.forward(images, Phase::Train { step })?;
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), labels);
    let value = loss.clone().into_scalar::<f32>();
    if !value.is_finite() {
        return Err(TrainError::NonFiniteLoss {
            loss: value,
            step,
            epoch: 0,
        });
    }
    let grads = GradientsParams::from_grads(loss.backward(), &classifier.prompt);
    let prompt = classifier.prompt.clone();
    classifier.prompt = optimizer.step(lr, prompt, grads);
    Ok((value, logits.inner()))
}

/// One pass over the training data with the current prompt, accumulating the evidence the mapping
/// is fitted on.
pub fn fit_mapping<B: Backbone>(
    classifier: &PromptedClassifier<B>,
    config: &LabelMappingConfig,
    loader: &BatchLoader,
    device: &Device,
) -> Result<Mapping> {
    let classes = classifier.num_classes();
    let mut frequencies = FrequencyMatrix::new(classifier.backbone.output_dim(), classes);
    let evidence = config.evidence(classes);
    for (k, batch) in loader.epoch(0, 0, device).enumerate() {
        let (_, source) = classifier.backbone_outputs(batch.images, Some(Phase::Eval { batch: k as u64 }))?;
        let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
        frequencies.add(source, &labels, evidence)?;
    }
    Ok(config.fit(&frequencies, device)?)
}

impl<B: Backbone> Trained<B> {
    /// The selected prompt.
    pub fn prompt(&self) -> &Prompt {
        &self.classifier.prompt
    }

    /// Evaluates the selected classifier on `data` (the test split, once, at the end) with and
    /// without the prompt, and records the result in the run's metrics log.
    pub fn evaluate(&self, data: Arc<PreparedDataset>, batch_size: usize) -> Result<Report> {
        let loader = BatchLoader::new(data.clone(), batch_size)?;
        let prompted = evaluate(&self.classifier, &loader, &self.device, true)?;
        let unprompted = evaluate(&self.classifier, &loader, &self.device, false)?;
        let report = Report {
            classes: data.classes.clone(),
            prompted,
            unprompted,
        };
        if let Some(run) = &self.run_dir {
            run.append_metrics(&serde_json::json!({ "final_evaluation": data.source, "report": report }))?;
        }
        Ok(report)
    }
}

/// Accuracy of the unprompted classifier (same mapping): the baseline beside a prompt's.
pub fn evaluate_unprompted<B: Backbone>(
    classifier: &PromptedClassifier<B>,
    data: Arc<PreparedDataset>,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    evaluate(classifier, &BatchLoader::new(data, batch_size)?, device, false)
}
