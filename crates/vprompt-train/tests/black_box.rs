//! Black-box prompt training on the tiny ResNet fixture and the committed Fashion-MNIST subset: the
//! model is only queried (through a wrapper that counts every image it is sent).

mod common;

use common::spsa_gc_drawing;

use std::result::Result;
use std::sync::Arc;

use burn::prelude::*;
use vprompt_backbone::ImageBackbone;
use vprompt_data::PreparedDataset;
use vprompt_mapping::LabelMappingConfig;
use vprompt_prompt::*;
use vprompt_testkit::to_vec;
use vprompt_train::*;

/// A black box that counts the images it is sent.
struct Counting {
    inner: LocalModel<ImageBackbone>,
    images: u64,
}

impl Counting {
    fn new(device: &Device) -> Self {
        let mapping = LabelMappingConfig::FirstN.init(10, 10, device).unwrap();
        Self {
            inner: LocalModel::new(common::tiny_resnet(device), mapping).unwrap(),
            images: 0,
        }
    }
}

impl BlackBoxModel for Counting {
    fn input_size(&self) -> [usize; 2] {
        self.inner.input_size()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn query(&mut self, images: Tensor<4>) -> Result<Vec<f32>, QueryError> {
        self.images += images.dims()[0] as u64;
        self.inner.query(images)
    }
}

/// A domain shift the frozen model has never seen, with a known cure: the images of `data` dimmed
/// to `0.7 x` ("clean"), labelled with the model's own top-1 prediction on them, then brightened by
/// `+0.3` (`77 / 255`). Unprompted, the model mislabels many shifted images; the full-image prompt
/// `-0.3` restores the clean images and so 100 % top-1. A black-box prompt has to find that
/// direction from queries alone.
fn shifted(
    data: &Arc<PreparedDataset>,
    n: usize,
    model: &mut Counting,
    device: &Device,
) -> Arc<PreparedDataset> {
    let data = common::subset(data, n);
    let (clean, shifted) = vprompt_testkit::shift_domain(&data.pixels);
    let clean = Arc::new(PreparedDataset {
        pixels: clean,
        ..(*data).clone()
    });
    let loader = vprompt_data::BatchLoader::new(clean.clone(), 100).unwrap();
    let mut labels = Vec::new();
    for batch in loader.epoch(0, 0, device) {
        let scores = model.inner.query(batch.images).unwrap();
        labels.extend(
            scores
                .chunks(10)
                .map(|row| (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b })),
        );
    }
    Arc::new(PreparedDataset {
        source: format!("{} (dimmed to 0.7, labelled by the model, +0.3)", data.source),
        pixels: shifted,
        labels,
        ..(*data).clone()
    })
}

fn pixel_prompt(config: impl Into<PromptConfig>, device: &Device) -> Prompt {
    config.into().init([32, 32], device).unwrap()
}

fn padding(pad: usize) -> PaddingPromptConfig {
    PaddingPromptConfig::new(pad)
        .with_init(PromptInit::Zeros)
        .with_space(PromptSpace::Pixel { clamp: true })
}

fn spsa_gc() -> ZerothOrderConfig {
    spsa_gc_drawing(5)
}

fn rgf() -> ZerothOrderConfig {
    ZerothOrderConfig::Rgf {
        directions: 5,
        smoothing: 0.01,
        learning_rate: 0.02,
        learning_rate_min: 0.0002,
    }
}

/// The stated margin: on a domain shift of the fixture model's inputs (see [`shifted`]), both
/// estimators lift test top-1 over the same black box without the prompt by at least 10 points in
/// three epochs over 300 images (measured: see docs/black-box.md), and every query is counted.
#[cfg(feature = "flex")]
#[test]
fn black_box_training_beats_the_unprompted_baseline_and_counts_every_query() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let mut labeller = Counting::new(&device);
    let train = shifted(&train, 300, &mut labeller, &device);
    let valid = shifted(&valid, 100, &mut labeller, &device);
    let test = shifted(&test, 1000, &mut labeller, &device);
    let full = FullImagePromptConfig::new()
        .with_init(PromptInit::Zeros)
        .with_space(PromptSpace::Pixel { clamp: true });
    for optimizer in [spsa_gc(), rgf()] {
        let mut model = Counting::new(&device);
        let dir = tempfile::tempdir().unwrap();
        let config = BlackBoxConfig::new(3, optimizer.clone())
            .with_batch_size(8)
            .with_log_every(0);
        let trained = BlackBoxTrainer::new(config, &device)
            .with_run_dir(dir.path())
            .quiet(true)
            .train(
                &mut model,
                pixel_prompt(full.clone(), &device),
                train.clone(),
                valid.clone(),
            )
            .unwrap();
        // 300 images in batches of 8: 38 steps per epoch, each image sent once per point.
        let points = optimizer.points_per_step() as u64;
        assert_eq!(trained.steps, 3 * 38);
        assert_eq!(trained.queries, 3 * 300 * points);
        assert_eq!(trained.validation_queries, 3 * 100);
        assert_eq!(
            model.images,
            trained.queries + trained.validation_queries,
            "every query counted"
        );
        assert_eq!(trained.history.last().unwrap().queries, Some(trained.queries));

        let report = trained.evaluate(&mut model, test.clone(), 100).unwrap();
        assert_eq!(report.evaluation_queries, 2000);
        assert_eq!(model.images, trained.queries + trained.validation_queries + 2000);
        let (p, u) = (report.prompted.top1, report.unprompted.top1);
        eprintln!("{}: prompted {p:.3} vs unprompted {u:.3}", optimizer.name());
        assert!(
            p >= u + 0.10,
            "{}: prompted {p:.3} vs unprompted {u:.3}",
            optimizer.name()
        );
        for file in ["metrics.jsonl", "checkpoint.json", "best.json"] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
    }
}

/// A budget that fits 3.5 steps runs exactly 3 and spends exactly their queries.
fn the_query_budget_stops_the_run_exactly(device: &Device) {
    let device = device.clone();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 320), common::subset(&valid, 32));
    let optimizer = spsa_gc();
    let step_cost = 32 * optimizer.points_per_step() as u64;
    let budget = 3 * step_cost + step_cost / 2;
    let mut model = Counting::new(&device);
    let trained = BlackBoxTrainer::new(
        BlackBoxConfig::new(2, optimizer)
            .with_query_budget(Some(budget))
            .with_log_every(0),
        &device,
    )
    .quiet(true)
    .train(&mut model, pixel_prompt(padding(2), &device), train, valid)
    .unwrap();
    assert!(trained.budget_exhausted);
    assert_eq!(trained.steps, 3);
    assert_eq!(trained.queries, 3 * step_cost);
    assert!(trained.queries <= budget);
    assert_eq!(
        trained.history.len(),
        1,
        "the partial epoch is recorded and evaluated"
    );
    assert_eq!(trained.validation_queries, 32);
    assert_eq!(model.images, 3 * step_cost + 32);
}

/// A run killed mid-epoch resumes to exactly the prompt of an uninterrupted run: the perturbations
/// are functions of (seed, step) and the SPSA-GC momentum is checkpointed.
fn resumed_black_box_runs_end_bit_identical(device: &Device) {
    let device = device.clone();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 64), common::subset(&valid, 32));
    // One draw per step (two queries per image): small enough for lavapipe.
    let config = BlackBoxConfig::new(3, spsa_gc_drawing(1))
        .with_seed(5)
        .with_log_every(0);
    let prompt = || {
        pixel_prompt(
            RandomPatchPromptConfig::new(6)
                .with_seed(2)
                .with_init(PromptInit::Zeros)
                .with_space(PromptSpace::Pixel { clamp: true }),
            &device,
        )
    };
    let run = |dir: &std::path::Path, stop: Option<u64>| {
        let mut trainer = BlackBoxTrainer::new(config.clone(), &device)
            .with_run_dir(dir)
            .quiet(true);
        if let Some(stop) = stop {
            trainer = trainer.stop_after_steps(stop);
        }
        trainer
            .train(
                &mut Counting::new(&device),
                prompt(),
                train.clone(),
                valid.clone(),
            )
            .unwrap()
    };
    let full = tempfile::tempdir().unwrap();
    let expected = run(full.path(), None);
    assert_eq!(expected.steps, 6);
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), Some(3)).interrupted);
    let resumed = run(dir.path(), None);
    assert_eq!(resumed.steps, 6);
    assert_eq!(resumed.queries, expected.queries);
    let last = |d: &std::path::Path| {
        to_vec(
            RunDir::create(d)
                .unwrap()
                .load_checkpoint(&device)
                .unwrap()
                .unwrap()
                .prompt
                .learned(),
        )
    };
    let (a, b) = (last(full.path()), last(dir.path()));
    assert!(a.iter().any(|&v| v != 0.0), "the prompt moved");
    common::assert_resumed(&common::wide(&b), &common::wide(&a), &device, "the prompt");
    let losses = |t: &BlackBoxTrained| t.history.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    common::assert_resumed(
        &losses(&resumed),
        &losses(&expected),
        &device,
        "the epochs' losses",
    );
}

/// A model that answers with the wrong number of scores.
struct Broken;

impl BlackBoxModel for Broken {
    fn input_size(&self) -> [usize; 2] {
        [32, 32]
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn query(&mut self, _images: Tensor<4>) -> Result<Vec<f32>, QueryError> {
        Ok(vec![0.0; 3])
    }
}

#[cfg(feature = "flex")]
#[test]
fn bad_prompts_and_bad_replies_are_clear_errors() {
    let device = Device::flex();
    let (train, valid, _) = common::fmnist_32();
    let (train, valid) = (common::subset(&train, 32), common::subset(&valid, 32));
    let trainer = BlackBoxTrainer::new(BlackBoxConfig::new(1, ZerothOrderConfig::rgf()), &device).quiet(true);
    let normalized = pixel_prompt(PaddingPromptConfig::new(2), &device);
    let err = trainer
        .train(
            &mut Counting::new(&device),
            normalized,
            train.clone(),
            valid.clone(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("pixel space"), "{err}");
    let err = trainer
        .train(
            &mut Broken,
            pixel_prompt(padding(2), &device),
            train.clone(),
            valid.clone(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("returned 3 scores"), "{err}");
    let err = BlackBoxTrainer::new(
        BlackBoxConfig::new(1, ZerothOrderConfig::rgf()).with_query_budget(Some(0)),
        &device,
    )
    .train(&mut Broken, pixel_prompt(padding(2), &device), train, valid)
    .unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
}

// The margin test (above) trains 228 steps with two estimators, 13 minutes and more on lavapipe:
// flex only. The loop itself (queries, budget, checkpoints, resume) runs on every device here.
vprompt_testkit::device_tests!(
    the_query_budget_stops_the_run_exactly,
    resumed_black_box_runs_end_bit_identical,
);
