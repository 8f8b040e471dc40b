//! Input-conditional prompts (`ConditionalPromptConfig`: a template plus a per-image prompt from a
//! small generator) trained with the frozen tiny ResNet fixture on the committed Fashion-MNIST
//! subset: white-box through the gradient engine, and by queries alone through the zeroth-order
//! one. Flex only: the engines' loops run on every backend in `training.rs` and `black_box.rs`, and
//! the generator's values on every backend in `vprompt-prompt/tests/conditional.rs`.

#![cfg(feature = "flex")]

// The resume helpers are for comparisons off flex.
#[allow(dead_code)]
mod common;

use std::sync::Arc;

use burn::prelude::*;
use vprompt_backbone::ImageBackbone;
use vprompt_data::{BatchLoader, PreparedDataset};
use vprompt_mapping::{LabelMappingConfig, Mapping};
use vprompt_prompt::*;
use vprompt_testkit::to_vec;
use vprompt_train::*;

fn first_n(device: &Device) -> Mapping {
    LabelMappingConfig::FirstN.init(10, 10, device).unwrap()
}

/// The full-image template in clamped pixel space, starting at zero.
fn full_image() -> FullImagePromptConfig {
    FullImagePromptConfig::new()
        .with_init(PromptInit::Zeros)
        .with_space(PromptSpace::Pixel { clamp: true })
}

fn conditional(template: impl Into<PromptConfig>) -> PromptConfig {
    ConditionalPromptConfig::new(Box::new(template.into())).into()
}

/// A shift whose cure depends on the image: the first `n` images of `data` dimmed to `0.7 x`
/// (`vprompt_testkit::shift_domain`), labelled with the frozen model's top-1 on them, and then
/// every other image brightened by `+77 / 255`. The cure is `-77 / 255` on the brightened images
/// and nothing on the others (a constant prompt would darken them below zero, where the clamp
/// loses them): a fixed prompt must compromise, a conditional one can tell them apart (their
/// background is grey, not black).
fn half_shifted(data: &Arc<PreparedDataset>, n: usize, device: &Device) -> Arc<PreparedDataset> {
    let data = common::subset(data, n);
    let (clean, shifted) = vprompt_testkit::shift_domain(&data.pixels);
    let mut model = LocalModel::new(common::tiny_resnet(device), first_n(device)).unwrap();
    let clean_data = Arc::new(PreparedDataset {
        pixels: clean.clone(),
        ..(*data).clone()
    });
    let mut labels = Vec::new();
    for batch in BatchLoader::new(clean_data, 100).unwrap().epoch(0, 0, device) {
        let scores = model.query(batch.images).unwrap();
        labels.extend(
            scores
                .chunks(10)
                .map(|row| (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b })),
        );
    }
    let bytes = data.image_bytes();
    let pixels = (0..n)
        .flat_map(|i| {
            let source = if i % 2 == 0 { &shifted } else { &clean };
            source[i * bytes..(i + 1) * bytes].to_vec()
        })
        .collect();
    Arc::new(PreparedDataset {
        source: format!(
            "{} (dimmed, labelled by the model, every other +0.3)",
            data.source
        ),
        pixels,
        labels,
        ..(*data).clone()
    })
}

fn classifier(prompt: PromptConfig, device: &Device) -> PromptedClassifier<ImageBackbone> {
    let prompt = prompt.init([32, 32], device).unwrap();
    PromptedClassifier::new(prompt, common::tiny_resnet(device), first_n(device)).unwrap()
}

/// The stated margin, white-box: on the half-shifted fixture (see [`half_shifted`]) the
/// conditional full-image prompt beats the fixed one it wraps by at least 3 points of test top-1
/// after the same 10 epochs of Adam at 0.005 (measured on flex: unprompted 63.7 %, fixed 72.6 %,
/// conditional 77.6 %; the fixed prompt's best over learning rates 0.005, 0.01 and 0.02 was
/// 73.5 %; docs/training.md), and the run's selected prompt comes back from its run directory
/// with its generator.
#[test]
fn a_conditional_prompt_beats_its_fixed_template_where_the_cure_depends_on_the_image() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let train = half_shifted(&train, 900, &device);
    let valid = half_shifted(&valid, 100, &device);
    let test = half_shifted(&test, 1000, &device);
    let config = TrainingConfig::new(
        10,
        0.005,
        TrainingConfig::ilm_vp().optimizer,
        ScheduleConfig::CosinePerStep,
    )
    .with_batch_size(32)
    .with_log_every(0);
    let mut results = Vec::new();
    for prompt in [full_image().into(), conditional(full_image())] {
        let dir = tempfile::tempdir().unwrap();
        let trained = Trainer::new(config.clone(), &device)
            .with_run_dir(dir.path())
            .quiet(true)
            .train(classifier(prompt, &device), train.clone(), valid.clone())
            .unwrap();
        let report = trained.evaluate(test.clone(), 100).unwrap();
        let (selected, _) = RunDir::create(dir.path())
            .unwrap()
            .load_best(&device)
            .unwrap()
            .unwrap();
        let reloaded =
            PromptedClassifier::new(selected, common::tiny_resnet(&device), first_n(&device)).unwrap();
        let loader = BatchLoader::new(test.clone(), 100).unwrap();
        assert_eq!(
            evaluate(&reloaded, &loader, &device, true).unwrap().top1,
            report.prompted.top1,
            "the selected prompt reloads"
        );
        results.push((report.unprompted.top1, report.prompted.top1));
    }
    let ((unprompted, fixed), (_, conditional)) = (results[0], results[1]);
    println!("test top-1: unprompted {unprompted:.3}, fixed {fixed:.3}, conditional {conditional:.3}");
    assert!(
        fixed > unprompted + 0.05,
        "fixed {fixed:.3} vs unprompted {unprompted:.3}"
    );
    assert!(
        conditional >= fixed + 0.03,
        "conditional {conditional:.3} vs fixed {fixed:.3}"
    );
}

/// `generator_learning_rate`: one SGD step moves the template at the prompt's rate and the
/// generator at its own; a zero rate leaves that part exactly where it was.
#[test]
fn a_conditional_prompt_steps_its_template_and_generator_at_their_own_rates() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let (train, _, _) = common::fmnist_32();
    let data = common::subset(&train, 8);
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
    };
    // From a moved generator (its last layer starts at zero, which leaves the hidden layers
    // without a gradient on the first step).
    let mut model = classifier(conditional(full_image()), &device);
    model.prompt = Some(model.prompt.take().unwrap().fork(&ad).train());
    let step = |model: &mut PromptedClassifier<ImageBackbone>, rates: [f64; 3]| {
        let batch = BatchLoader::new(data.clone(), 8)
            .unwrap()
            .epoch(0, 0, &ad)
            .next()
            .unwrap();
        let mut optimizer = PromptOptimizer::new(&sgd);
        train_step_data_parallel(model, &[], &mut optimizer, batch.images, batch.labels, rates, 0).unwrap();
        to_vec(model.prompt.as_ref().unwrap().learned())
    };
    let template_values = 3 * 32 * 32;
    let start = step(&mut model, [0.1, 0.0, 0.1]);
    let changed =
        |a: &[f32], b: &[f32], range: std::ops::Range<usize>| range.filter(|&k| a[k] != b[k]).count();
    for (rates, template_moves, generator_moves) in [
        ([0.0, 0.0, 0.1], false, true),
        ([0.1, 0.0, 0.0], true, false),
        ([0.1, 0.0, 0.1], true, true),
    ] {
        let mut model = model.clone();
        let after = step(&mut model, rates);
        let moved = |range| changed(&start, &after, range);
        assert_eq!(moved(0..template_values) > 0, template_moves, "{rates:?}");
        assert_eq!(
            moved(template_values..start.len()) > 0,
            generator_moves,
            "{rates:?}"
        );
    }
    let err = TrainingConfig::ilm_vp()
        .with_generator_learning_rate(Some(-1.0))
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("generator_learning_rate"), "{err}");
}

/// Zeroth-order: SPSA-GC moves the generator too (its values are part of the learned row), every
/// query is counted, and the black box's accuracy with the trained prompt is the white-box
/// classifier's with the same prompt, so candidates are prompted as `apply` prompts.
#[test]
fn a_conditional_prompt_trains_by_queries_alone() {
    let device = Device::flex();
    let (train, valid, test) = common::fmnist_32();
    let train = half_shifted(&train, 64, &device);
    let valid = half_shifted(&valid, 32, &device);
    let test = half_shifted(&test, 200, &device);
    let optimizer = common::spsa_gc_drawing(2);
    let prompt = conditional(full_image()).init([32, 32], &device).unwrap();
    let template_values = prompt.learned_mask().dims()[3] - 3_203;
    let before = to_vec(prompt.learned());
    let mut model = LocalModel::new(common::tiny_resnet(&device), first_n(&device)).unwrap();
    let trained = BlackBoxTrainer::new(
        BlackBoxConfig::new(2, optimizer.clone())
            .with_batch_size(16)
            .with_log_every(0),
        &device,
    )
    .quiet(true)
    .train(&mut model, prompt, train, valid)
    .unwrap();
    assert_eq!(trained.steps, 2 * 4);
    assert_eq!(trained.queries, 2 * 64 * optimizer.points_per_step() as u64);
    let after = to_vec(trained.prompt.learned());
    let moved = |range: std::ops::Range<usize>| range.filter(|&k| after[k] != before[k]).count();
    assert!(
        moved(0..template_values) > template_values / 2,
        "the template moved"
    );
    assert!(moved(template_values..after.len()) > 3_000, "the generator moved");

    let report = trained.evaluate(&mut model, test.clone(), 50).unwrap();
    let white_box = PromptedClassifier::new(
        trained.prompt.clone(),
        common::tiny_resnet(&device),
        first_n(&device),
    )
    .unwrap();
    let loader = BatchLoader::new(test, 50).unwrap();
    let expected = evaluate(&white_box, &loader, &device, true).unwrap();
    assert_eq!(report.prompted.top1, expected.top1);
}
