//! End to end on the committed Fashion-MNIST subset with the tiny ResNet fixture backbone (a narrow
//! ResNet pretrained on scikit-learn's digits, so prompting it for Fashion-MNIST is a small version
//! of the paper's setting).

mod common;

use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_mapping::{LabelMappingConfig, MappingKind};
use vprompt_prompt::*;
use vprompt_testkit::to_vec;
use vprompt_train::*;

fn classifier(
    prompt: impl Into<PromptConfig>,
    device: &Device,
) -> PromptedClassifier<vprompt_backbone::ImageBackbone> {
    let backbone = common::tiny_resnet(device);
    let mapping = LabelMappingConfig::FirstN.init(10, 10, device).unwrap();
    let prompt = prompt.into().init([32, 32], device).unwrap();
    PromptedClassifier::new(prompt, backbone, mapping).unwrap()
}

fn adam(epochs: usize) -> TrainingConfig {
    TrainingConfig::new(
        epochs,
        0.05,
        TrainingConfig::ilm_vp().optimizer,
        ScheduleConfig::CosinePerStep,
    )
    .with_batch_size(32)
    .with_log_every(0)
}

/// The stated margin: a full-image prompt lifts test top-1 by at least 15 points over the same
/// frozen model and mapping without it (measured: 20.2 % -> 49.0 %).
#[cfg(feature = "flex")]
#[test]
fn prompted_accuracy_beats_unprompted_and_the_run_is_recorded() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let dir = tempfile::tempdir().unwrap();
    let model = classifier(FullImagePromptConfig::new().with_init(PromptInit::Zeros), &device);
    let before = to_vec(
        model
            .forward_unprompted(Tensor::<4>::full([2, 3, 32, 32], 0.3, &device))
            .unwrap(),
    );
    let observed = std::sync::Arc::new(Observed::default());
    let trained = Trainer::new(adam(5), &device)
        .with_run_dir(dir.path())
        .with_observer(observed.clone())
        .quiet(true)
        .train(model, train, valid)
        .unwrap();
    assert_eq!(trained.history.len(), 5);
    // The observer is told of every epoch, with the whole history so far and the run directory.
    assert_eq!(
        *observed.calls.lock().unwrap(),
        [(1, true), (2, true), (3, true), (4, true), (5, true)]
    );
    assert!(!trained.interrupted);
    let (best_epoch, best_top1) = trained.best.unwrap();
    assert_eq!(
        trained.history[best_epoch - 1].valid_top1,
        Some(best_top1),
        "selected on validation"
    );

    let report = trained.evaluate(test, 100).unwrap();
    let (p, u) = (report.prompted.top1, report.unprompted.top1);
    assert!(p >= u + 0.15, "prompted {p:.3} vs unprompted {u:.3}");
    assert_eq!(report.prompted.count, 1000);
    assert_eq!(report.prompted.confusion.iter().flatten().sum::<usize>(), 1000);
    assert!(report.prompted.top5 >= report.prompted.top1);
    assert_eq!(report.prompted.per_class.len(), 10);
    assert!(report.to_string().contains("Ankle boot"));

    // The frozen backbone did not change.
    let after = to_vec(
        trained
            .classifier
            .forward_unprompted(Tensor::<4>::full([2, 3, 32, 32], 0.3, &device))
            .unwrap(),
    );
    assert_eq!(before, after);

    // The run directory: config, metrics, best prompt, checkpoint; no curves (the engine never
    // draws: an observer does).
    assert!(!dir.path().join("loss.png").exists());
    for file in ["config.json", "metrics.jsonl", "best.json", "checkpoint.json"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    // The test split is read once, after training: the metrics log holds every epoch, then exactly
    // one final evaluation, last.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert!(
        lines[..5]
            .iter()
            .all(|l| l.get("epoch").is_some() && l.get("final_evaluation").is_none())
    );
    assert!(lines[5].get("final_evaluation").is_some());
}

/// Records what the engine tells an observer: (history length, whether a run directory came).
#[cfg(feature = "flex")]
#[derive(Default)]
struct Observed {
    calls: std::sync::Mutex<Vec<(usize, bool)>>,
}

#[cfg(feature = "flex")]
impl vprompt_train::EpochObserver for Observed {
    fn epoch_recorded(
        &self,
        history: &[EpochRecord],
        run_dir: Option<&std::path::Path>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        assert_eq!(history.last().map(|r| r.epoch), Some(history.len()));
        self.calls
            .lock()
            .unwrap()
            .push((history.len(), run_dir.is_some()));
        Ok(())
    }
}

fn checkpoint_prompt(dir: &std::path::Path, device: &Device) -> Vec<f32> {
    let checkpoint = RunDir::create(dir)
        .unwrap()
        .load_checkpoint(device)
        .unwrap()
        .unwrap();
    to_vec(checkpoint.prompt.perturbation(Phase::Eval { batch: 0 }))
}

/// A run killed mid-epoch (and one killed right after a checkpoint) resumes and ends with exactly the
/// prompt of an uninterrupted run: batches and random-patch locations are functions of (seed,
/// epoch, step), and the optimiser's momentum is restored.
#[cfg(feature = "flex")]
#[test]
fn resumed_runs_end_bit_identical() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 320), common::subset(&valid, 64));
    let config = TrainingConfig::new(
        3,
        2.0,
        TrainingConfig::paper().optimizer,
        ScheduleConfig::WarmupCosine { warmup: 5 },
    )
    .with_batch_size(32)
    .with_seed(9)
    .with_log_every(0);
    let prompt = || RandomPatchPromptConfig::new(6).with_seed(3);
    let full = tempfile::tempdir().unwrap();
    let trained = Trainer::new(config.clone(), &device)
        .with_run_dir(full.path())
        .quiet(true)
        .train(classifier(prompt(), &device), train.clone(), valid.clone())
        .unwrap();
    assert_eq!(trained.steps, 30);
    let expected = checkpoint_prompt(full.path(), &device);

    for kill_at in [15, 20] {
        let dir = tempfile::tempdir().unwrap();
        let first = Trainer::new(config.clone(), &device)
            .with_run_dir(dir.path())
            .stop_after_steps(kill_at)
            .quiet(true)
            .train(classifier(prompt(), &device), train.clone(), valid.clone())
            .unwrap();
        assert!(first.interrupted);
        let resumed = Trainer::new(config.clone(), &device)
            .with_run_dir(dir.path())
            .quiet(true)
            .train(classifier(prompt(), &device), train.clone(), valid.clone())
            .unwrap();
        assert_eq!(resumed.steps, 30);
        let got = checkpoint_prompt(dir.path(), &device);
        let what = format!("killed at step {kill_at}");
        common::assert_resumed(
            &common::wide(&got),
            &common::wide(&expected),
            &device,
            &format!("{what}: the prompt"),
        );
        let losses = |t: &Trained<_>| t.history.iter().map(|r| r.train_loss).collect::<Vec<_>>();
        common::assert_resumed(
            &losses(&resumed),
            &losses(&trained),
            &device,
            &format!("{what}: the epochs' losses"),
        );
    }
    // Resuming with other settings is refused.
    let err = Trainer::new(config.with_seed(10), &device)
        .with_run_dir(full.path())
        .quiet(true)
        .train(classifier(prompt(), &device), train, valid)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("other training settings (training.seed: 9 -> 10)"),
        "{err}"
    );
}

/// A loss that turns NaN stops the run with the step, and the last good checkpoint stays readable.
#[cfg(feature = "flex")]
#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_checkpoint() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 96), common::subset(&valid, 32));
    // From epoch 2 the learning rate jumps to 5e37: the prompt overflows within a few steps.
    let config = TrainingConfig::new(
        5,
        0.5,
        OptimizerConfig::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
        },
        ScheduleConfig::MultiStep {
            milestones: vec![0.2],
            gamma: 1e38,
        },
    )
    .with_batch_size(32)
    .with_log_every(0);
    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(config, &device)
        .with_run_dir(dir.path())
        .quiet(true)
        .train(classifier(FullImagePromptConfig::new(), &device), train, valid)
        .unwrap_err();
    let TrainError::NonFiniteLoss { step, epoch, .. } = err else {
        panic!("{err}")
    };
    assert!(epoch >= 2 && step >= 3, "epoch {epoch} step {step}");
    let checkpoint = RunDir::create(dir.path())
        .unwrap()
        .load_checkpoint(&device)
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.state.epochs_done, epoch - 1);
    assert!(
        to_vec(checkpoint.prompt.perturbation(Phase::Eval { batch: 0 }))
            .iter()
            .all(|v| v.is_finite())
    );
}

/// A prompt that grows past `divergence_limit` stops the run after that epoch, naming the step,
/// and the last good checkpoint (the epoch before) is kept.
#[cfg(feature = "flex")]
#[test]
fn a_diverging_prompt_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 96), common::subset(&valid, 32));
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
    };
    // From the second epoch the learning rate is 10,000 times larger.
    let config = |epochs: usize| {
        TrainingConfig::new(
            epochs,
            0.5,
            sgd.clone(),
            ScheduleConfig::MultiStep {
                milestones: vec![0.34],
                gamma: 1e4,
            },
        )
        .with_batch_size(32)
        .with_log_every(0)
    };
    let largest = |dir: &std::path::Path| {
        let checkpoint = RunDir::create(dir)
            .unwrap()
            .load_checkpoint(&device)
            .unwrap()
            .unwrap();
        let values = to_vec(checkpoint.prompt.perturbation(Phase::Eval { batch: 0 }));
        (
            checkpoint.state.epochs_done,
            values.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs()))),
        )
    };
    // The same run stopped early in the second epoch: its checkpoint after the first epoch says
    // how large a sane prompt is here.
    let first = tempfile::tempdir().unwrap();
    let _ = Trainer::new(config(3), &device)
        .with_run_dir(first.path())
        .quiet(true)
        .stop_after_steps(4)
        .train(
            classifier(FullImagePromptConfig::new(), &device),
            train.clone(),
            valid.clone(),
        );
    let (done, sane) = largest(first.path());
    assert_eq!(done, 1);
    assert!(sane > 0.0 && sane.is_finite());

    let dir = tempfile::tempdir().unwrap();
    let err = Trainer::new(config(3).with_divergence_limit(2.0 * sane), &device)
        .with_run_dir(dir.path())
        .quiet(true)
        .train(classifier(FullImagePromptConfig::new(), &device), train, valid)
        .unwrap_err();
    let TrainError::Diverged {
        epoch, step, value, ..
    } = err
    else {
        panic!("{err}")
    };
    assert!(
        epoch == 2 && step == 6 && value > 2.0 * sane,
        "epoch {epoch} step {step} value {value}"
    );
    assert!(err.to_string().contains("divergence_limit"), "{err}");
    assert_eq!(
        largest(dir.path()),
        (1, sane),
        "the first epoch's checkpoint is kept"
    );

    let invalid = config(1).with_divergence_limit(0.0).validate().unwrap_err();
    assert!(invalid.to_string().contains("divergence_limit"), "{invalid}");
}

#[cfg(feature = "flex")]
#[test]
fn iterative_mapping_is_refitted_and_saved() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let dir = tempfile::tempdir().unwrap();
    let trained = Trainer::new(adam(2), &device)
        .with_mapping(LabelMappingConfig::ILM)
        .with_run_dir(dir.path())
        .quiet(true)
        .train(
            classifier(FullImagePromptConfig::new().with_init(PromptInit::Zeros), &device),
            train,
            valid,
        )
        .unwrap();
    let MappingKind::Label { method, sources } = trained.classifier.mapping.kind() else {
        panic!()
    };
    assert_eq!(method, "iterative");
    assert_eq!(sources.as_ref().unwrap().len(), 10);
    // The best (prompt, mapping) pair reloads and predicts identically.
    let (prompt, mapping) = RunDir::create(dir.path())
        .unwrap()
        .load_best(&device)
        .unwrap()
        .unwrap();
    let reloaded = PromptedClassifier::new(prompt, common::tiny_resnet(&device), mapping.unwrap()).unwrap();
    let batch = Tensor::<4>::from_data(
        TensorData::new(
            test.pixels[..4 * 1024]
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect::<Vec<_>>(),
            [4, 1, 32, 32],
        ),
        &device,
    )
    .repeat_dim(1, 3);
    let phase = Phase::Eval { batch: 0 };
    common::assert_resumed(
        &common::wide(&to_vec(reloaded.forward(batch.clone(), phase).unwrap())),
        &common::wide(&to_vec(trained.classifier.forward(batch, phase).unwrap())),
        &device,
        "the reloaded pair's logits",
    );
}

/// A backbone resized with `with_input_size` trains a prompt at its new size, end to end; data and
/// prompts made for the preset's size are refused with the sizes in the message.
#[cfg(feature = "flex")]
#[test]
fn a_resized_backbone_trains_prompts_at_its_size() {
    let device = Device::flex();
    let backbone = common::tiny_resnet(&device).with_input_size([48, 48]).unwrap();
    let mapping = || LabelMappingConfig::FirstN.init(10, 10, &device).unwrap();
    let small = PaddingPromptConfig::new(4).init([32, 32], &device).unwrap();
    let err = PromptedClassifier::new(small.into(), backbone.clone(), mapping()).unwrap_err();
    assert!(err.to_string().contains("[48, 48]"), "{err}");

    let prompt = PaddingPromptConfig::new(4)
        .init(backbone.input_size(), &device)
        .unwrap();
    let model = PromptedClassifier::new(prompt.into(), backbone, mapping()).unwrap();
    let splits =
        vprompt_data::fashion_mnist(common::workspace().join("tests/fixtures/fashion-mnist")).unwrap();
    let at = |size| {
        std::sync::Arc::new(
            vprompt_data::prepare(&splits.test, &vprompt_data::Preprocess::stretch(size)).unwrap(),
        )
    };
    let (data_48, data_32) = (
        common::subset(&at([48, 48]), 64),
        common::subset(&at([32, 32]), 64),
    );
    let trainer = Trainer::new(adam(1), &device).quiet(true);
    let err = trainer
        .train(model.clone(), data_32.clone(), data_32)
        .unwrap_err();
    assert!(
        err.to_string().contains("[32, 32]") && err.to_string().contains("[48, 48]"),
        "{err}"
    );
    let trained = trainer.train(model, data_48.clone(), data_48).unwrap();
    assert_eq!(trained.history.len(), 1);
    assert!(trained.history[0].train_loss.is_finite());
    assert_eq!(trained.classifier.input_size(), [48, 48]);
}

#[cfg(feature = "flex")]
#[test]
fn normalized_gradient_steps_have_the_learning_rate_as_length() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let model = classifier(ShrinkFramePromptConfig::new(4), &ad);
    let images = Tensor::<4>::full([4, 3, 24, 24], 0.5, &ad);
    let labels = Tensor::<1, Int>::from_ints([0, 1, 2, 3], &ad);
    let logits = model.forward(images, Phase::Train { step: 0 }).unwrap();
    let loss = burn::nn::loss::CrossEntropyLossConfig::new()
        .init(&ad)
        .forward(logits, labels);
    let prompt = model.learned_prompt().unwrap().clone();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &prompt);
    let before = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }));
    let mut optim = PromptOptimizer::new(&OptimizerConfig::NormalizedGradient);
    let prompt = optim.step(0.7, prompt, grads);
    let after = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }));
    let length: f64 = before
        .iter()
        .zip(&after)
        .map(|(a, b)| ((b - a) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((length - 0.7).abs() < 1e-4, "step length {length}");
    assert!(optim.state().unwrap().is_empty());
}

#[cfg(feature = "flex")]
#[test]
fn linear_probe_baseline() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let backbone = common::tiny_resnet(&device);
    let probe = LinearProbeConfig::new()
        .with_epochs(60)
        .with_learning_rate(0.02)
        .fit(&backbone, &train, &valid, &device)
        .unwrap();
    let eval = probe.evaluate(&backbone, &test, &device).unwrap();
    assert_eq!(backbone.feature_dim(), 16);
    // 16 pooled features of a digits-trained net: far above chance (10 %) on Fashion-MNIST.
    assert!(eval.top1 > 0.5, "linear probe top-1 {:.3}", eval.top1);
    assert!(probe.best.unwrap().1 > 0.5);
}

/// The probe runs through the same engine: a run directory with its checkpoint, selection and
/// curves, and a probe killed mid-run resumes to exactly the layer and accuracies of an
/// uninterrupted one (Adam's moments and the batch order are restored).
#[cfg(feature = "flex")]
#[test]
fn linear_probe_resumes_bit_identical() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 300), common::subset(&valid, 60));
    let backbone = common::tiny_resnet(&device);
    let config = LinearProbeConfig::new()
        .with_epochs(6)
        .with_batch_size(64)
        .with_learning_rate(0.02)
        .with_seed(4);
    let run = |dir: &std::path::Path, stop: Option<u64>| {
        let mut trainer = Trainer::new(config.clone(), &device)
            .with_run_dir(dir)
            .quiet(true);
        if let Some(stop) = stop {
            trainer = trainer.stop_after_steps(stop);
        }
        trainer.train(&backbone, train.clone(), valid.clone()).unwrap()
    };
    let full = tempfile::tempdir().unwrap();
    let expected = run(full.path(), None);
    // 300 images in batches of 64: 5 steps per epoch, 30 in all; killed mid-epoch 3.
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), Some(13));
    assert_eq!(first.best.map(|(epoch, _)| epoch <= 2), Some(true));
    let resumed = run(dir.path(), None);
    assert_eq!(resumed.best, expected.best);
    let a = expected.evaluate(&backbone, &test, &device).unwrap();
    let b = resumed.evaluate(&backbone, &test, &device).unwrap();
    common::assert_resumed(&[a.loss], &[b.loss], &device, "the same layer: the test loss");
    if common::bit_exact(&device) {
        assert_eq!(a.confusion, b.confusion);
    }
    let metrics = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let losses = |text: String| -> Vec<f64> {
        text.lines()
            .map(|l| serde_json::from_str::<EpochRecord>(l).unwrap().train_loss)
            .collect()
    };
    common::assert_resumed(
        &losses(metrics(dir.path())),
        &losses(metrics(full.path())),
        &device,
        "the epochs' losses",
    );
    assert_eq!(losses(metrics(full.path())).len(), 6);
    for file in ["best.json", "checkpoint.json"] {
        assert!(full.path().join(file).exists(), "{file}");
    }
    let best = RunDir::create(full.path()).unwrap().best_dir().unwrap().unwrap();
    assert!(best.join(PROBE_FILE).exists());
}

#[cfg(feature = "flex")]
#[test]
fn recipes_and_invalid_settings() {
    let paper = TrainingConfig::paper();
    assert_eq!(
        (paper.epochs, paper.learning_rate, paper.batch_size),
        (1000, 40.0, 128)
    );
    assert_eq!(
        paper.optimizer,
        OptimizerConfig::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0
        }
    );
    assert_eq!(paper.schedule, ScheduleConfig::WarmupCosine { warmup: 1000 });
    assert_eq!(
        TrainingConfig::ilm_vp().schedule,
        ScheduleConfig::MultiStep {
            milestones: vec![0.5, 0.72],
            gamma: 0.1
        }
    );
    assert_eq!(
        TrainingConfig::evp().optimizer,
        OptimizerConfig::NormalizedGradient
    );
    for bad in [
        paper.clone().with_epochs(0),
        paper.clone().with_batch_size(0),
        paper.clone().with_learning_rate(f64::NAN),
        paper.clone().with_learning_rate(-1.0),
        paper.clone().with_eval_every(0),
        paper.clone().with_optimizer(OptimizerConfig::Adam {
            beta1: 1.5,
            beta2: 0.9,
            weight_decay: 0.0,
        }),
    ] {
        assert!(
            matches!(bad.validate(), Err(TrainError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
    let device = Device::flex();
    let backbone = common::tiny_resnet(&device);
    let wrong_size = PaddingPromptConfig::new(4)
        .init([224, 224], &device)
        .unwrap()
        .into();
    let mapping = LabelMappingConfig::FirstN.init(10, 10, &device).unwrap();
    let err = PromptedClassifier::new(wrong_size, backbone.clone(), mapping).unwrap_err();
    assert!(err.to_string().contains("[224, 224]"), "{err}");
    let wide = LabelMappingConfig::FirstN.init(1000, 10, &device).unwrap();
    let prompt = PaddingPromptConfig::new(4)
        .init([32, 32], &device)
        .unwrap()
        .into();
    assert!(PromptedClassifier::new(prompt, backbone, wide).is_err());
}

/// Without a validation split the whole training split trains and the last epoch's prompt is
/// selected, kept in the run directory like a best one; with one, ties keep the earlier epoch.
#[cfg(feature = "flex")]
#[test]
fn without_validation_the_last_epoch_is_selected() {
    let device = Device::flex();
    let (train, _, _) = common::fmnist_32();
    let train = common::subset(&train, 64);
    let dir = tempfile::tempdir().unwrap();
    let trained = Trainer::new(adam(3), &device)
        .with_run_dir(dir.path())
        .quiet(true)
        .train_without_validation(classifier(PaddingPromptConfig::new(4), &device), train)
        .unwrap();
    assert_eq!((trained.best, trained.selected_epoch), (None, 3));
    assert!(trained.history.iter().all(|r| r.valid_top1.is_none()));
    let run = RunDir::create(dir.path()).unwrap();
    let (best, _) = run.load_best(&device).unwrap().unwrap();
    let last = run.load_checkpoint(&device).unwrap().unwrap();
    assert_eq!(last.state.epochs_done, 3);
    let values = |p: &Prompt| to_vec(p.perturbation(Phase::Eval { batch: 0 }));
    assert_eq!(values(&best), values(&last.prompt));
    assert_eq!(values(trained.prompt()), values(&last.prompt));
}

/// A run directory whose `checkpoint.json` is gone resumes from its newest complete checkpoint,
/// never restarts over it, and ends where an uninterrupted run ends.
#[cfg(feature = "flex")]
#[test]
fn a_missing_checkpoint_pointer_resumes_from_the_newest_complete_checkpoint() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 64), common::subset(&valid, 32));
    let prompt = || classifier(PaddingPromptConfig::new(4), &device);
    let values = |p: &Prompt| to_vec(p.perturbation(Phase::Eval { batch: 0 }));
    let whole = Trainer::new(adam(3), &device)
        .quiet(true)
        .train(prompt(), train.clone(), valid.clone())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let partial = Trainer::new(adam(3), &device)
        .with_run_dir(dir.path())
        .quiet(true)
        .stop_after_steps(5)
        .train(prompt(), train.clone(), valid.clone())
        .unwrap();
    assert!(partial.interrupted);
    std::fs::remove_file(dir.path().join("checkpoint.json")).unwrap();
    /// Records the lines the trainer reports.
    struct Lines(std::sync::Mutex<Vec<String>>);
    impl vprompt_core::Progress for Lines {
        fn task(&self, _: &str, _: u64, _: &'static str) -> Box<dyn vprompt_core::Task + '_> {
            Box::new(vprompt_core::Quiet)
        }
        fn line(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_string());
        }
    }
    let lines = std::sync::Arc::new(Lines(Default::default()));
    let resumed = Trainer::new(adam(3), &device)
        .with_run_dir(dir.path())
        .with_progress(lines.clone())
        .train(prompt(), train, valid)
        .unwrap();
    let lines = lines.0.lock().unwrap();
    assert!(
        lines[0].contains("after epoch 2"),
        "resumed, not restarted: {lines:?}"
    );
    assert_eq!(resumed.steps, whole.steps);
    assert_eq!(values(resumed.prompt()), values(whole.prompt()));
    assert_eq!(resumed.history.len(), 3);
}

/// Data parallel over two flex devices (each with its own copy of the backbone) trains the prompt
/// one device trains with the same global batch: the same losses and prompt up to float rounding
/// (measured: 2e-8 relative for the losses, 1.2e-6 for the prompt after 12 Adam steps), with the
/// batch split unevenly (33 = 16 + 17) and a checkpoint resumed on the other device count.
#[cfg(feature = "flex")]
#[test]
fn data_parallel_over_two_devices_matches_one_device() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 198), common::subset(&valid, 32));
    let config = adam(2).with_batch_size(33).with_seed(3);
    let prompt = || PaddingPromptConfig::new(4).with_init(PromptInit::Zeros);
    let one_dir = tempfile::tempdir().unwrap();
    let one = Trainer::new(config.clone(), &device)
        .with_run_dir(one_dir.path())
        .quiet(true)
        .train(classifier(prompt(), &device), train.clone(), valid.clone())
        .unwrap();
    let two_dir = tempfile::tempdir().unwrap();
    let two_devices = [Device::flex(), Device::flex()];
    let two = Trainer::new(config.clone(), &device)
        .with_devices(&two_devices)
        .unwrap()
        .with_run_dir(two_dir.path())
        .quiet(true)
        .train(classifier(prompt(), &device), train.clone(), valid.clone())
        .unwrap();
    assert_eq!(two.steps, 12);
    let losses = |t: &Trained<_>| t.history.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    let close = |a: &[f64], b: &[f64], what: &str| {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        eprintln!(
            "{what}: data parallel vs one device, largest difference {:.2e} relative",
            worst / scale
        );
        assert!(
            worst <= DATA_PARALLEL_TOLERANCE * scale,
            "{what}: {worst:e} of {scale:e}"
        );
    };
    close(&losses(&two), &losses(&one), "losses");
    let prompt_of = |dir: &std::path::Path| common::wide(&checkpoint_prompt(dir, &device));
    let expected = prompt_of(one_dir.path());
    assert!(expected.iter().any(|&v| v != 0.0), "the prompt moved");
    close(&prompt_of(two_dir.path()), &expected, "prompt");

    // Killed on two devices, resumed on one: the same run.
    let dir = tempfile::tempdir().unwrap();
    let first = Trainer::new(config.clone(), &device)
        .with_devices(&two_devices)
        .unwrap()
        .with_run_dir(dir.path())
        .stop_after_steps(8)
        .quiet(true)
        .train(classifier(prompt(), &device), train.clone(), valid.clone())
        .unwrap();
    assert!(first.interrupted);
    let resumed = Trainer::new(config, &device)
        .with_run_dir(dir.path())
        .quiet(true)
        .train(classifier(prompt(), &device), train, valid)
        .unwrap();
    assert_eq!(resumed.steps, 12);
    close(&prompt_of(dir.path()), &expected, "resumed on one device: prompt");
    assert!(Trainer::new(adam(1), &device).with_devices(&[]).is_err());
}

/// The split is real: with a replica whose weights are zeroed, exactly the batch's second part
/// (rows 2..5 of 5) comes out of the replica, and the first part equals the one-device forward.
#[cfg(feature = "flex")]
#[test]
fn data_parallel_forward_runs_each_part_on_its_replica() {
    struct Zero;
    impl burn::module::ModuleMapper for Zero {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }
    let device = Device::flex();
    let model = classifier(PaddingPromptConfig::new(4), &device);
    let zeroed = Replica {
        device: device.clone(),
        backbone: model.backbone.clone().map(&mut Zero),
    };
    let images = Tensor::<4>::random([5, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let phase = Phase::Eval { batch: 0 };
    let split = to_vec(
        model
            .forward_data_parallel(images.clone(), phase, &[zeroed])
            .unwrap(),
    );
    let whole = to_vec(model.forward(images, phase).unwrap());
    // 5 images over 2 devices: rows 0..2 here, 2..5 on the replica.
    assert_eq!(split[..20], whole[..20]);
    let rows: Vec<&[f32]> = split.chunks(10).collect();
    assert!(
        rows[2..].iter().all(|r| *r == rows[2]),
        "a zeroed backbone gives one row"
    );
    assert_ne!(rows[2], &whole[20..30]);
    assert_ne!(rows[0], rows[1]);
}

/// How far data-parallel training may end from one device's, relative to the largest value:
/// each part's kernels see a smaller batch, which may round differently.
const DATA_PARALLEL_TOLERANCE: f64 = 1e-5;

/// The gradient loop on every device, at a size lavapipe runs in CI (4 steps): a data-driven
/// mapping refitted every epoch (ILM), validation selection, checkpoints, and a run killed
/// mid-epoch that resumes to the uninterrupted run's prompt and losses (bit-exact on flex, within
/// [`common::RESUME_TOLERANCE`] elsewhere).
fn the_gradient_loop_refits_selects_and_resumes(device: &Device) {
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 32), common::subset(&valid, 16));
    let config = adam(2).with_batch_size(16).with_seed(5);
    let run = |dir: &std::path::Path, stop: Option<u64>| {
        let mut trainer = Trainer::new(config.clone(), device)
            .with_mapping(LabelMappingConfig::ILM)
            .with_run_dir(dir)
            .quiet(true);
        if let Some(stop) = stop {
            trainer = trainer.stop_after_steps(stop);
        }
        trainer
            .train(
                classifier(PaddingPromptConfig::new(4), device),
                train.clone(),
                valid.clone(),
            )
            .unwrap()
    };
    let full = tempfile::tempdir().unwrap();
    let expected = run(full.path(), None);
    assert_eq!((expected.steps, expected.history.len()), (4, 2));
    assert!(expected.history.iter().all(|r| r.train_loss.is_finite()));
    let (best_epoch, best_top1) = expected.best.unwrap();
    assert_eq!(expected.history[best_epoch - 1].valid_top1, Some(best_top1));
    let MappingKind::Label { method, .. } = expected.classifier.mapping.kind() else {
        panic!("a label mapping")
    };
    assert_eq!(method, "iterative");
    for file in ["checkpoint.json", "best.json", "metrics.jsonl"] {
        assert!(full.path().join(file).exists(), "{file}");
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), Some(3)).interrupted);
    let resumed = run(dir.path(), None);
    assert_eq!(resumed.steps, 4);
    common::assert_resumed(
        &common::wide(&checkpoint_prompt(dir.path(), device)),
        &common::wide(&checkpoint_prompt(full.path(), device)),
        device,
        "the prompt",
    );
    let losses = |t: &Trained<_>| t.history.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    common::assert_resumed(
        &losses(&resumed),
        &losses(&expected),
        device,
        "the epochs' losses",
    );
}

/// The linear probe through the engine on every device, small: trained, killed, resumed to the
/// same layer (the same test loss, within the resume tolerance off flex).
fn the_probe_trains_and_resumes(device: &Device) {
    let (train, valid, test) = common::fmnist_32();
    let (train, valid, test) = (
        common::subset(&train, 32),
        common::subset(&valid, 16),
        common::subset(&test, 32),
    );
    let backbone = common::tiny_resnet(device);
    let config = LinearProbeConfig::new()
        .with_epochs(3)
        .with_batch_size(16)
        .with_learning_rate(0.02)
        .with_seed(4);
    let run = |dir: &std::path::Path, stop: Option<u64>| {
        let mut trainer = Trainer::new(config.clone(), device).with_run_dir(dir).quiet(true);
        if let Some(stop) = stop {
            trainer = trainer.stop_after_steps(stop);
        }
        trainer.train(&backbone, train.clone(), valid.clone()).unwrap()
    };
    let full = tempfile::tempdir().unwrap();
    let expected = run(full.path(), None);
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), Some(3));
    assert_eq!(first.best.map(|(epoch, _)| epoch), Some(1), "killed in epoch 2");
    let resumed = run(dir.path(), None);
    let a = expected.evaluate(&backbone, &test, device).unwrap();
    let b = resumed.evaluate(&backbone, &test, device).unwrap();
    assert!(a.loss.is_finite() && a.count == 32);
    common::assert_resumed(&[b.loss], &[a.loss], device, "the probe's test loss");
}

// The larger runs above (learning margins, longer resumes) take minutes per test on lavapipe:
// flex only. The loop they run is the one these device tests check on every backend.
vprompt_testkit::device_tests!(
    the_gradient_loop_refits_selects_and_resumes,
    the_probe_trains_and_resumes,
);
