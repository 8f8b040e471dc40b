//! Training a prompt by gradient steps (the paper's white-box setting): the engine's
//! [`Method`] for `Trainer<TrainingConfig>`. What is particular to it: the prompt trains on the
//! autodiff twin of the backbone's device (the frozen backbone never enters the tape), the
//! learning rate is a pure function of the global step, and data-driven label mappings are
//! refitted between epochs.

use std::path::Path;
use std::sync::Arc;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_core::{Progress, Task};
use vprompt_data::{Batch, BatchLoader, PreparedDataset};
use vprompt_mapping::{FrequencyMatrix, LabelMappingConfig, Mapping, MappingInput};
use vprompt_prompt::{Phase, Prompt};

use crate::classifier::{PromptedClassifier, Replica};
use crate::config::TrainingConfig;
use crate::engine::{
    self, At, EpochRecord, MAPPING_FILE, Method, OPTIMIZER_FILE, PROMPT_FILE, RunDir, Snapshot, Stepped,
};
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report, evaluate, evaluate_with};
use crate::optimizer::PromptOptimizer;
use crate::schedule::learning_rate;
use crate::trainer::Trainer;

/// The result of training.
#[derive(Debug, Clone)]
pub struct Trained<B: Backbone> {
    /// The classifier with the prompt (and mapping) selected on the validation split: the best
    /// validation top-1, or the last epoch's if the run never evaluated.
    pub classifier: PromptedClassifier<B>,
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// Best validation top-1 and its epoch (1-based); `None` without validation.
    pub best: Option<(usize, f64)>,
    /// The epoch (1-based) whose prompt `classifier` holds: the best one, or the last one when
    /// the run did not validate.
    pub selected_epoch: usize,
    /// Optimisation steps taken.
    pub steps: u64,
    /// Whether the run stopped at [`Trainer::stop_after_steps`] before finishing.
    pub interrupted: bool,
    device: Device,
    run_dir: Option<RunDir>,
}

impl Trainer<TrainingConfig> {
    /// Fits a data-driven label mapping (FLM, ILM, BLM, BLM+) before training and refits it as the
    /// config says; the classifier's mapping is replaced (the config's `mapping`).
    pub fn with_mapping(mut self, mapping: LabelMappingConfig) -> Self {
        self.config.mapping = Some(mapping);
        self
    }

    /// Data parallel: each training batch is split over `devices` (the first is the main one, and
    /// replaces the device the trainer was made with). Each device holds a frozen copy of the
    /// backbone; the prompt, the optimiser, the mapping, validation and checkpoints stay on the
    /// main device, where the prompt's gradient is gathered (Burn's autodiff moves each part's
    /// input gradient back, so one backward pass does it on every backend; see
    /// [`PromptedClassifier::forward_data_parallel`]). One optimiser step per global batch, so
    /// the result is one device's with the same batch size, up to rounding; checkpoints resume
    /// on any number of devices. Load the classifier's backbone on `devices[0]`. An empty list
    /// is an error.
    pub fn with_devices(mut self, devices: &[Device]) -> Result<Self> {
        let (main, rest) = devices
            .split_first()
            .ok_or_else(|| TrainError::Mismatch("data parallel training needs at least one device".into()))?;
        self.device = main.clone();
        self.replicas = rest.to_vec();
        Ok(self)
    }

    /// Trains `classifier`'s prompt on `train`, selecting on `valid`. Neither split may be the test
    /// split: evaluate on it once, afterwards, with [`Trained::evaluate`].
    pub fn train<B: Backbone>(
        &self,
        classifier: PromptedClassifier<B>,
        train: Arc<PreparedDataset>,
        valid: Arc<PreparedDataset>,
    ) -> Result<Trained<B>> {
        self.run(classifier, train, Some(valid))
    }

    /// Trains on the whole of `train` with no validation split, keeping the last epoch's prompt:
    /// the released code's setting (`Trained::selected_epoch` says which epoch that is).
    pub fn train_without_validation<B: Backbone>(
        &self,
        classifier: PromptedClassifier<B>,
        train: Arc<PreparedDataset>,
    ) -> Result<Trained<B>> {
        self.run(classifier, train, None)
    }

    fn run<B: Backbone>(
        &self,
        classifier: PromptedClassifier<B>,
        train: Arc<PreparedDataset>,
        valid: Option<Arc<PreparedDataset>>,
    ) -> Result<Trained<B>> {
        self.config.validate()?;
        if let Some(mapping) = &self.config.mapping {
            let inputs = match mapping.input() {
                MappingInput::SourceOutputs => classifier.backbone.output_dim(),
                MappingInput::Features => classifier.backbone.feature_dim(),
            };
            mapping.validate(inputs, classifier.num_classes())?;
        }
        let ad = self.device.clone().autodiff();
        let prompt = classifier.learned_prompt()?.clone().fork(&ad).train();
        // A learned mapping in the config is initialised here (from the run's seed; a resumed run
        // then restores it from the checkpoint); a learned mapping trains on the autodiff device.
        let mapping = match &self.config.mapping {
            Some(config) if config.is_learned() => init_mapping(
                config,
                &classifier.backbone,
                classifier.num_classes(),
                self.config.seed,
                &self.device,
            )?,
            _ => classifier.mapping,
        };
        let mapping = if mapping.is_learned() {
            mapping.fork(&ad).train()
        } else {
            mapping.fork(&self.device)
        };
        let replicas = self
            .replicas
            .iter()
            .map(|device| Replica::new(&classifier.backbone, device, true))
            .collect();
        let mut method = GradientMethod {
            replicas,
            config: self.config.clone(),
            device: self.device.clone(),
            optimizer: PromptOptimizer::new(&self.config.optimizer),
            classifier: PromptedClassifier {
                prompt: Some(prompt),
                mapping,
                ..classifier
            },
            ad,
        };
        let outcome = engine::run(&self.options, &self.config, &mut method, train, valid)?;
        let (prompt, mapping) = outcome.selected;
        Ok(Trained {
            classifier: PromptedClassifier {
                prompt: Some(prompt.fork(&self.device)),
                backbone: method.classifier.backbone,
                mapping,
            },
            history: outcome.history,
            best: outcome.best,
            selected_epoch: outcome.selected_epoch,
            steps: outcome.steps,
            interrupted: outcome.interrupted,
            device: self.device.clone(),
            run_dir: outcome.run_dir,
        })
    }
}

/// A gradient run's state: the classifier with its prompt on the autodiff device, and the
/// optimiser.
struct GradientMethod<B: Backbone> {
    /// Copies of the backbone on the further devices of data-parallel training.
    replicas: Vec<Replica<B>>,
    config: TrainingConfig,
    device: Device,
    ad: Device,
    classifier: PromptedClassifier<B>,
    optimizer: PromptOptimizer,
}

impl<B: Backbone> GradientMethod<B> {
    fn prompt(&self) -> &Prompt {
        self.classifier
            .prompt
            .as_ref()
            .expect("a gradient run has a prompt")
    }
}

impl<B: Backbone> Method for GradientMethod<B> {
    type Selected = (Prompt, Mapping);
    type Batch = Batch;

    fn input_size(&self) -> [usize; 2] {
        self.classifier.input_size()
    }

    fn num_classes(&self) -> usize {
        self.classifier.num_classes()
    }

    fn batches(&self, loader: &BatchLoader, epoch: u64) -> Box<dyn Iterator<Item = Batch>> {
        Box::new(loader.epoch(epoch, 0, &self.ad))
    }

    /// Data-driven mappings: fitted before the first epoch, refitted every k epochs.
    fn begin_epoch(&mut self, epoch: usize, train: &BatchLoader, progress: &dyn Progress) -> Result<()> {
        let Some(config) = self.config.mapping.as_ref().filter(|c| !c.is_learned()) else {
            return Ok(());
        };
        if epoch == 0 || config.refit_every().is_some_and(|k| epoch.is_multiple_of(k)) {
            let unshuffled = BatchLoader::new(train.data().clone(), self.config.batch_size)?;
            self.classifier.mapping =
                fit_mapping(&self.classifier.valid(), config, &unshuffled, &self.device)?;
            progress.line(&format!(
                "epoch {}: {} mapping fitted",
                epoch + 1,
                config.method()
            ));
        }
        Ok(())
    }

    fn step(&mut self, batch: Batch, _labels: &[usize], at: At) -> Result<Stepped> {
        let lr = learning_rate(
            &self.config.schedule,
            self.config.learning_rate,
            at.step,
            at.steps_per_epoch,
            at.total_steps,
        );
        // The same schedule, scaled to each part's base rate.
        let scaled = |base: Option<f64>| lr * base.map_or(1.0, |b| b / self.config.learning_rate);
        let mapping_lr = scaled(self.config.mapping_learning_rate);
        let generator_lr = scaled(self.config.generator_learning_rate);
        let (loss, logits) = train_step_data_parallel(
            &mut self.classifier,
            &self.replicas,
            &mut self.optimizer,
            batch.images,
            batch.labels,
            [lr, mapping_lr, generator_lr],
            at.step,
        )
        .map_err(|e| match e {
            TrainError::NonFiniteLoss { loss, step, .. } => TrainError::NonFiniteLoss {
                loss,
                step,
                epoch: at.epoch + 1,
            },
            e => e,
        })?;
        Ok(Stepped {
            loss: loss as f64,
            scores: logits.into_data().try_into_vec_as::<f32>().expect("f32 logits"),
            lr,
        })
    }

    fn validate(&mut self, valid: &BatchLoader, task: &mut dyn Task) -> Result<Evaluation> {
        evaluate_with(&self.classifier.valid(), valid, &self.device, true, task)
    }

    fn largest_value(&self) -> Option<f64> {
        let stats = self.prompt().statistics();
        Some(stats.min.abs().max(stats.max.abs()))
    }

    fn selected(&self) -> (Prompt, Mapping) {
        let classifier = self.classifier.valid();
        (
            classifier.prompt.expect("a gradient run has a prompt"),
            classifier.mapping,
        )
    }

    fn save(&self, dir: &Path, snapshot: Snapshot) -> Result<()> {
        self.prompt().save(dir.join(PROMPT_FILE))?;
        self.classifier.mapping.save(dir.join(MAPPING_FILE))?;
        if snapshot == Snapshot::Checkpoint {
            engine::write_file(&dir.join(OPTIMIZER_FILE), &self.optimizer.state()?)?;
        }
        Ok(())
    }

    fn restore(&mut self, dir: &Path, _state: &engine::CheckpointState) -> Result<()> {
        let unreadable = |reason: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let mapping = dir.join(MAPPING_FILE);
        if !mapping.exists() {
            return Err(unreadable(
                "the checkpoint has no mapping (is it a black-box run?)".into(),
            ));
        }
        let mapping = Mapping::load(mapping, &self.device)?;
        if mapping.is_learned() != self.classifier.mapping.is_learned() {
            return Err(unreadable(format!(
                "the checkpoint's mapping is {:?}, this run trains {:?}",
                mapping.kind(),
                self.classifier.mapping.kind()
            )));
        }
        self.classifier.mapping = if mapping.is_learned() {
            mapping.fork(&self.ad).train()
        } else {
            mapping
        };
        self.classifier.prompt = Some(Prompt::load(dir.join(PROMPT_FILE), &self.ad)?);
        let path = dir.join(OPTIMIZER_FILE);
        let bytes = std::fs::read(&path).map_err(crate::error::io(&path))?;
        self.optimizer = PromptOptimizer::new(&self.config.optimizer)
            .with_state(bytes)
            .map_err(|reason| unreadable(format!("unreadable optimiser state: {reason}")))?;
        Ok(())
    }

    fn load_selected(&self, dir: &Path) -> Result<(Prompt, Mapping)> {
        Ok((
            Prompt::load(dir.join(PROMPT_FILE), &self.device)?,
            Mapping::load(dir.join(MAPPING_FILE), &self.device)?,
        ))
    }
}

/// One optimisation step on one batch: prompted forward (`Phase::Train { step }`), cross-entropy,
/// backward to the prompt (and a learned mapping), update with learning rate `lr`. The
/// classifier's prompt (and learned mapping) is replaced by the updated one; returns the loss and
/// the batch's logits (detached). A non-finite loss leaves
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
    train_step_data_parallel(classifier, &[], optimizer, images, labels, [lr; 3], step)
}

/// [`train_step`] with the batch split over the main device and `replicas`' devices
/// ([`PromptedClassifier::forward_data_parallel`]): the loss is the whole batch's, so the step is
/// the one-device step up to rounding; with no replicas it is [`train_step`]. `[lr, mapping_lr,
/// generator_lr]`: the prompt's learning rate, a learned mapping's, and an input-conditional
/// prompt's generator's (its template's values step at `lr`).
///
/// # Shapes
/// - images: `[batch, 3, h, w]` in `[0, 1]`, on the prompt's (autodiff) device
/// - labels: `[batch]`
pub fn train_step_data_parallel<B: Backbone>(
    classifier: &mut PromptedClassifier<B>,
    replicas: &[Replica<B>],
    optimizer: &mut PromptOptimizer,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    [lr, mapping_lr, generator_lr]: [f64; 3],
    step: u64,
) -> Result<(f32, Tensor<2>)> {
    classifier.learned_prompt()?;
    let logits = classifier.forward_data_parallel(images, Phase::Train { step }, replicas)?;
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
    let prompt = classifier.prompt.take().expect("checked above");
    let mut grads = loss.backward();
    if classifier.mapping.is_learned() {
        let mapping_grads = GradientsParams::from_module(&mut grads, &classifier.mapping);
        let mapping = classifier.mapping.clone();
        classifier.mapping = optimizer.step(mapping_lr, mapping, mapping_grads);
    }
    // A conditional prompt's template steps at `lr`, its generator at `generator_lr`: the template's
    // gradients are taken out first, and what is left of the prompt's is the generator's. (Both
    // steps are per parameter, so with equal rates this is the one step below.)
    let (prompt, rest_lr) = match &prompt {
        Prompt::Conditional(conditional) if generator_lr != lr => {
            let template = GradientsParams::from_module(&mut grads, conditional.template());
            (optimizer.step(lr, prompt, template), generator_lr)
        }
        _ => (prompt, lr),
    };
    let grads = GradientsParams::from_grads(grads, &prompt);
    classifier.prompt = Some(optimizer.step(rest_lr, prompt, grads));
    Ok((value, logits.inner()))
}

/// The mapping a config names for `backbone` and `classes`, made without data: a learned one
/// (FullyMap over the source outputs, a linear probe over the features) drawn from `seed`, or
/// first-N, random, manual. Mappings fitted on data come from [`fit_mapping`].
pub fn init_mapping<B: Backbone>(
    config: &LabelMappingConfig,
    backbone: &B,
    classes: usize,
    seed: u64,
    device: &Device,
) -> Result<Mapping> {
    let inputs = match config.input() {
        MappingInput::SourceOutputs => backbone.output_dim(),
        MappingInput::Features => backbone.feature_dim(),
    };
    Ok(config.init_seeded(inputs, classes, seed, device)?)
}

/// One pass over the training data with the current prompt (none for an unprompted classifier),
/// accumulating the evidence the mapping is fitted on.
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
        self.classifier
            .prompt
            .as_ref()
            .expect("a trained classifier has its prompt")
    }

    /// Evaluates the selected classifier on `data` (the test split, once, at the end) with and
    /// without the prompt, and records the result in the run's metrics log.
    pub fn evaluate(&self, data: Arc<PreparedDataset>, batch_size: usize) -> Result<Report> {
        let loader = BatchLoader::new(data.clone(), batch_size)?;
        let report = Report {
            classes: data.classes.clone(),
            prompted: evaluate(&self.classifier, &loader, &self.device, true)?,
            unprompted: evaluate(&self.classifier, &loader, &self.device, false)?,
        };
        if let Some(run) = &self.run_dir {
            run.append_final_evaluation(&data.source, &report)?;
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
