//! Prompt ensembles on the tiny ResNet fixture and the committed Fashion-MNIST subset: members
//! trained with other seeds and templates, their mapped probabilities averaged. Flex only (the
//! forward passes they combine are checked on every backend elsewhere).

#![cfg(feature = "flex")]

// Only the fixtures are used here.
#[allow(dead_code)]
mod common;

use burn::prelude::*;
use vprompt_backbone::ImageBackbone;
use vprompt_data::BatchLoader;
use vprompt_mapping::LabelMappingConfig;
use vprompt_prompt::*;
use vprompt_testkit::to_vec;
use vprompt_train::*;

fn zeros() -> PromptConfig {
    FullImagePromptConfig::new().with_init(PromptInit::Zeros).into()
}

fn trained(prompt: PromptConfig, seed: u64, device: &Device) -> PromptedClassifier<ImageBackbone> {
    let (train, valid, _) = common::fmnist_32();
    let mapping = LabelMappingConfig::FirstN.init(10, 10, device).unwrap();
    let classifier = PromptedClassifier::new(
        prompt.init([32, 32], device).unwrap(),
        common::tiny_resnet(device),
        mapping,
    )
    .unwrap();
    let config = TrainingConfig::new(
        2,
        0.05,
        TrainingConfig::ilm_vp().optimizer,
        ScheduleConfig::CosinePerStep,
    )
    .with_batch_size(32)
    .with_seed(seed)
    .with_log_every(0);
    Trainer::new(config, device)
        .quiet(true)
        .train(classifier, train, valid)
        .unwrap()
        .classifier
}

/// Three prompts from zero (a full-image prompt and padding frames of 8 and 12, other batch
/// orders), 2 epochs each: the ensemble's cross-entropy is at most the members' mean (always, for
/// averaged probabilities: `-log mean p <= mean -log p`), and its test top-1 is the members' mean
/// within a point. Each member's evaluation in the ensemble's pass is its own `evaluate`, the
/// averaged probabilities are a distribution, and a one-member ensemble is that member.
///
/// Top-1 is not above the mean member here. Measured on the fixture's 1,000 test images (members'
/// mean -> ensemble): these three at 2, 3 and 4 epochs 36.5 -> 36.2, 39.5 -> 40.1, 40.8 -> 41.4
/// %; with two more frames (10, 14) at 2 and 3 epochs 37.1 -> 37.2, 40.3 -> 40.2 %; three
/// full-image prompts from zero (batch orders only) 37.9 -> 37.4 and 43.8 -> 43.6 %; members of
/// unequal strength below the mean (a full-image prompt at 37-40 % with two at 19-25 %: 25.4 ->
/// 23.3, 30.1 -> 29.4 %). The tiny model's prompts err alike, so averaging them gains little.
#[test]
fn an_ensemble_beats_its_mean_member_in_cross_entropy_and_matches_it_in_top1() {
    let device = Device::flex();
    let (_, _, test) = common::fmnist_32();
    let loader = BatchLoader::new(test.clone(), 100).unwrap();
    let members = vec![
        trained(zeros(), 1, &device),
        trained(
            PaddingPromptConfig::new(8).with_init(PromptInit::Zeros).into(),
            2,
            &device,
        ),
        trained(
            PaddingPromptConfig::new(12).with_init(PromptInit::Zeros).into(),
            3,
            &device,
        ),
    ];
    let ensemble = Ensemble::new(members.clone()).unwrap();
    assert_eq!(
        (ensemble.len(), ensemble.num_classes(), ensemble.input_size()),
        (members.len(), 10, [32, 32])
    );
    let result = ensemble.evaluate(&loader, &device).unwrap();
    println!(
        "test top-1: members {:?}, mean {:.3}, ensemble {:.3}; loss {:?} {:.4}",
        result.members.iter().map(|m| m.top1).collect::<Vec<_>>(),
        result.mean_member_top1(),
        result.ensemble.top1,
        result.members.iter().map(|m| m.loss).collect::<Vec<_>>(),
        result.ensemble.loss
    );
    assert_eq!(result.ensemble.count, 1000);
    assert!(
        result.ensemble.top1 >= result.mean_member_top1() - 0.01,
        "ensemble {} vs mean member {}",
        result.ensemble.top1,
        result.mean_member_top1()
    );
    let mean_loss = result.members.iter().map(|m| m.loss).sum::<f64>() / result.members.len() as f64;
    assert!(
        result.ensemble.loss <= mean_loss,
        "{} vs {mean_loss}",
        result.ensemble.loss
    );
    for (k, member) in members.iter().enumerate() {
        let alone = evaluate(member, &loader, &device, true).unwrap();
        assert_eq!(alone.confusion, result.members[k].confusion, "member {k}");
        assert!((alone.loss - result.members[k].loss).abs() < 1e-9, "member {k}");
    }

    let images = BatchLoader::new(test.clone(), 8)
        .unwrap()
        .epoch(0, 0, &device)
        .next()
        .unwrap()
        .images;
    let (logits, mean) = ensemble.forward(images.clone(), 0).unwrap();
    assert_eq!((logits.len(), mean.dims()), (members.len(), [8, 10]));
    let mean = to_vec(mean);
    for row in mean.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    let predictions = ensemble.predict(images).unwrap();
    for (row, p) in mean.chunks(10).zip(&predictions) {
        assert_eq!(row[p.class], row.iter().cloned().fold(f32::MIN, f32::max));
    }

    let single = Ensemble::new(vec![members[0].clone()])
        .unwrap()
        .evaluate(&loader, &device)
        .unwrap();
    assert_eq!(single.ensemble.confusion, single.members[0].confusion);
    assert!((single.ensemble.loss - single.members[0].loss).abs() < 1e-4);
}

/// Members that cannot be combined are refused with what differs.
#[test]
fn members_that_differ_are_refused() {
    let device = Device::flex();
    let member = |classes: usize, size: usize| {
        let backbone = common::tiny_resnet(&device);
        let backbone = vprompt_backbone::ImageBackbone::with_input_size(backbone, [size, size]).unwrap();
        let prompt = PaddingPromptConfig::new(4).init([size, size], &device).unwrap();
        let mapping = LabelMappingConfig::FirstN.init(10, classes, &device).unwrap();
        PromptedClassifier::new(prompt.into(), backbone, mapping).unwrap()
    };
    let err = Ensemble::<ImageBackbone>::new(vec![]).unwrap_err();
    assert!(err.to_string().contains("at least one member"), "{err}");
    let err = Ensemble::new(vec![member(10, 32), member(5, 32)]).unwrap_err();
    assert!(err.to_string().contains("10"), "{err}");
    let err = Ensemble::new(vec![member(10, 32), member(10, 40)]).unwrap_err();
    assert!(err.to_string().contains("[40, 40]"), "{err}");
    let mut unprompted = member(10, 32);
    unprompted.prompt = None;
    let err = Ensemble::new(vec![member(10, 32), unprompted]).unwrap_err();
    assert!(err.to_string().contains("member 1 has no prompt"), "{err}");
}
