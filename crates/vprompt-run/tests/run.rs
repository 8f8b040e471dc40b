//! The run layer as a library user calls it: a run trained from a `RunConfig`, loaded back with
//! `Run::load` and used to classify; `fresh` that keeps the user's files; the few-shot validation
//! default; the run's own preprocessing for new images.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use vprompt_data::{Filter, Fit, Preprocess, decode_image};
use vprompt_prompt::{FullImagePromptConfig, PromptInit};
use vprompt_run::{
    BackboneConfig, BlackBoxChoice, BlackBoxSource, DataConfig, DataFormat, Finished, MethodConfig,
    ProbeChoice, Run, RunConfig, RunError, TrainingChoice, read_config,
};
use vprompt_train::{Quiet, Recipe, ScheduleConfig};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A one-epoch run of a full-image prompt on the tiny ResNet, 4 images per class of the committed
/// Fashion-MNIST subset.
fn config(run_dir: &Path, cache: &Path) -> RunConfig {
    RunConfig::new(
        run_dir.to_path_buf(),
        DataConfig::new(
            DataFormat::FashionMnist,
            workspace().join("tests/fixtures/fashion-mnist"),
        )
        .with_few_shot(Some(4))
        .with_test_per_class(Some(2))
        .with_cache_dir(Some(cache.to_path_buf())),
    )
    .with_backbone(
        BackboneConfig::new()
            .with_preset("tiny-resnet".parse().unwrap())
            .with_weights(Some(
                workspace().join("crates/vprompt-backbone/tests/fixtures/tiny_resnet.bpk"),
            )),
    )
    .with_prompt(FullImagePromptConfig::new().with_init(PromptInit::Zeros).into())
    .with_method(MethodConfig::VisualPrompt(training(0.05)))
}

/// One epoch of ILM-VP's recipe at `learning_rate`, batches of 8.
fn training(learning_rate: f64) -> TrainingChoice {
    TrainingChoice::new()
        .with_recipe(Recipe::IlmVp)
        .with_epochs(Some(1))
        .with_learning_rate(Some(learning_rate))
        .with_batch_size(Some(8))
}

/// Runs `config`, which must finish.
fn run(config: RunConfig, fresh: bool) -> Finished {
    Run::new(config)
        .unwrap()
        .fresh(fresh)
        .run(&[Device::flex()], Arc::new(Quiet))
        .unwrap()
}

#[test]
fn a_trained_run_loads_back_as_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let run_dir = dir.path().join("run");
    let c = config(&run_dir, &dir.path().join("cache"));
    let Finished::VisualPrompt(trained) = run(c.clone(), false) else {
        panic!("a visual-prompt run")
    };
    let report = trained.report.expect("evaluated on the test split");
    // The run layer draws the curves the engine only records.
    for file in ["loss.png", "accuracy.png"] {
        let png = image::open(run_dir.join(file)).unwrap();
        assert_eq!((png.width(), png.height()), (640, 400), "{file}");
    }

    let loaded = Run::load(&run_dir, &device).unwrap();
    assert_eq!(loaded.config, c);
    assert_eq!(loaded.classes.len(), 10);
    // The loaded run evaluates to exactly what training reported.
    let again = loaded.evaluate(&device, &Quiet).unwrap();
    assert_eq!(again.prompted.top1, report.prompted.top1);
    assert_eq!(again.prompted.confusion, report.prompted.confusion);
    // And classifies new images, with class names.
    let image = decode_image(workspace().join("tests/fixtures/rgb-folder/cat/cat0.png")).unwrap();
    let classified = loaded.classify(vec![image.clone(), image], &device).unwrap();
    assert_eq!(classified.len(), 2);
    assert_eq!(classified[0].0.class, classified[1].0.class);
    assert_eq!(classified[0].1, loaded.classes[classified[0].0.class]);
    assert!(classified[0].0.probability > 0.0 && classified[0].0.probability <= 1.0);

    // Not a run: a typed error naming the file.
    let err = Run::load(dir.path().join("nothing"), &device).unwrap_err();
    assert!(
        matches!(err.root(), RunError::Io { action: "read", path, .. } if path.ends_with("run.json")),
        "{err:?}"
    );
}

#[test]
fn fresh_removes_only_what_a_run_writes_and_only_once_its_inputs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let run_dir = dir.path().join("run");
    let cache = dir.path().join("cache");
    run(config(&run_dir, &cache), false);
    std::fs::write(run_dir.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir(run_dir.join("figures")).unwrap();
    std::fs::write(run_dir.join("figures/a.png"), [1, 2, 3]).unwrap();

    // Other settings and inputs that cannot be read: nothing is removed.
    let mut broken = config(&run_dir, &cache)
        .with_prompt(FullImagePromptConfig::new().with_init(PromptInit::Zeros).into());
    broken.data.path = dir.path().join("missing");
    let before = read_config(&run_dir).unwrap();
    let err = Run::new(broken)
        .unwrap()
        .fresh(true)
        .run(std::slice::from_ref(&device), Arc::new(Quiet))
        .err()
        .expect("the data is missing");
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(read_config(&run_dir).unwrap(), before);
    assert!(run_dir.join("best.json").exists());

    // Other settings, fresh: the old run's files go, the user's stay byte for byte.
    let other = config(&run_dir, &cache).with_method(MethodConfig::VisualPrompt(training(0.01)));
    run(other.clone(), true);
    assert_eq!(read_config(&run_dir).unwrap(), other);
    assert_eq!(std::fs::read(run_dir.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(run_dir.join("figures/a.png")).unwrap(), [1, 2, 3]);
    // Without fresh, the same directory refuses a third setting, naming it.
    let third = other
        .clone()
        .with_method(MethodConfig::VisualPrompt(training(0.02)));
    let err = Run::new(third)
        .unwrap()
        .run(&[device], Arc::new(Quiet))
        .err()
        .expect("another run");
    match err {
        RunError::OtherRun { differences, .. } => {
            assert_eq!(differences, ["method.VisualPrompt.learning_rate: 0.01 -> 0.02"]);
        }
        e => panic!("{e:?}"),
    }
}

/// `few_shot = 50` on the fixture (100 images per class, 10 held out for validation): the
/// validation default takes the 10 there are, where it asked for 50 and failed.
#[test]
fn the_few_shot_validation_default_takes_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("run"), &dir.path().join("cache"));
    c.data.few_shot = Some(50);
    let data = c.prepare_data([8, 8], &Quiet).unwrap();
    assert_eq!(data.train.len(), 500);
    assert_eq!(data.valid.as_ref().unwrap().len(), 100);
    // Asked for explicitly, more than there is stays an error.
    c.data.validation_per_class = Some(50);
    assert!(c.prepare_data([8, 8], &Quiet).is_err());
}

/// New images go through the run's own preprocessing (here: nearest-neighbour, centre crop).
#[test]
fn new_images_are_prepared_as_the_run_data_was() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let run_dir = dir.path().join("run");
    let mut c = config(&run_dir, &dir.path().join("cache"));
    c.data.filter = Filter::Nearest;
    c.data.center_crop_from = Some(40);
    run(c, false);
    let loaded = Run::load(&run_dir, &device).unwrap();
    let image = decode_image(workspace().join("tests/fixtures/rgb-folder/cat/cat0.png")).unwrap();
    let pixels = loaded.pixels(vec![image.clone()], &device).unwrap();
    let prepare = |preprocess: Preprocess| {
        let dataset = vprompt_data::Dataset {
            source: "x".into(),
            images: vec![image.clone()],
            labels: vec![0],
            classes: vec!["x".into()],
            skipped: vec![],
        };
        let prepared = vprompt_data::prepare(&dataset, &preprocess).unwrap();
        vprompt_data::BatchLoader::new(Arc::new(prepared), 1)
            .unwrap()
            .epoch(0, 0, &device)
            .next()
            .unwrap()
            .images
    };
    let size = loaded.classifier.input_size();
    let cropped = prepare(Preprocess {
        size,
        filter: Filter::Nearest,
        fit: Fit::CenterCrop { shorter_side: 40 },
    });
    let stretched = prepare(Preprocess::stretch(size));
    let values = |t: &Tensor<4>| t.clone().into_data().try_to_vec::<f32>().unwrap();
    let same = |a: &Tensor<4>, b: &Tensor<4>| values(a) == values(b);
    assert!(same(&pixels, &cropped));
    assert!(!same(&pixels, &stretched), "a bicubic stretch differs");
}

/// Every method through the one `Run::run`: a black box against the run's own model, a linear
/// probe and the unprompted model, each recorded in its directory with its method, and loaded
/// back where it has a classifier.
#[test]
fn one_run_serves_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let cache = dir.path().join("cache");
    let base = |name: &str| config(&dir.path().join(name), &cache);

    let optimizer: vprompt_train::ZerothOrderConfig = serde_json::from_value(serde_json::json!({
        "SpsaGc": {"draws": 1, "a": 0.01, "c": 0.01, "o": 0.0, "alpha": 0.6, "gamma": 0.1, "momentum": 0.9}
    }))
    .unwrap();
    let black_box = base("black-box")
        .with_prompt(
            serde_json::from_value(serde_json::json!({
                "FullImage": {"init": "Zeros", "space": {"Pixel": {"clamp": true}}}
            }))
            .unwrap(),
        )
        .with_method(MethodConfig::BlackBox(
            BlackBoxChoice::new(BlackBoxSource::Local, optimizer)
                .with_epochs(1)
                .with_batch_size(20),
        ));
    let Finished::BlackBox(trained) = run(black_box.clone(), false) else {
        panic!("a black-box run")
    };
    assert!(trained.report.training_queries > 0);
    assert!(dir.path().join("black-box/accuracy-vs-queries.png").exists());
    let loaded = Run::load(dir.path().join("black-box"), &device).unwrap();
    assert_eq!(loaded.config.method, black_box.method);
    let again = loaded.evaluate(&device, &Quiet).unwrap();
    assert_eq!(again.prompted.top1, trained.report.prompted.top1);

    let probe = base("probe").with_method(MethodConfig::LinearProbe(ProbeChoice::new().with_epochs(Some(2))));
    let finished = run(probe, false);
    let summary = finished.summary().unwrap();
    assert!(matches!(finished, Finished::LinearProbe(_)));
    assert_eq!((summary.train_images, summary.test_images), (40, 20));
    for file in ["run.json", "best.json", "loss.png"] {
        assert!(dir.path().join("probe").join(file).exists(), "{file}");
    }
    let err = Run::load(dir.path().join("probe"), &device).unwrap_err();
    assert!(err.to_string().contains("linear-probe run"), "{err}");

    let unprompted = base("unprompted").with_method(MethodConfig::Unprompted);
    let summary = run(unprompted, false).summary().unwrap();
    assert_eq!(summary.unprompted_top1, None);
    let loaded = Run::load(dir.path().join("unprompted"), &device).unwrap();
    let eval = loaded.evaluate(&device, &Quiet).unwrap();
    assert_eq!(
        eval.unprompted.top1, summary.top1,
        "the same head on the same split"
    );

    // A method's settings are checked with the rest, before anything runs.
    let bad = base("bad").with_method(MethodConfig::LinearProbe(ProbeChoice::new().with_epochs(Some(0))));
    let err = Run::new(bad).unwrap_err();
    assert!(err.to_string().contains("method.LinearProbe.epochs"), "{err}");
}

/// More epochs extend a finished run where the schedule does not depend on the run's length (a
/// constant rate): the same run as one that long from the start. Where it does (a cosine), the
/// run is refused with the reason, and so is fewer epochs.
#[test]
fn more_epochs_extend_a_finished_run_when_the_schedule_allows() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let with = |name: &str, epochs: usize, schedule: ScheduleConfig| {
        config(&dir.path().join(name), &cache).with_method(MethodConfig::VisualPrompt(
            training(0.05)
                .with_epochs(Some(epochs))
                .with_schedule(Some(schedule)),
        ))
    };
    let losses = |finished: Finished| match finished {
        Finished::VisualPrompt(run) => (
            run.trained
                .history
                .iter()
                .map(|r| r.train_loss)
                .collect::<Vec<_>>(),
            run.report.unwrap().prompted.top1,
        ),
        _ => panic!("a visual-prompt run"),
    };
    run(with("extended", 1, ScheduleConfig::Constant), false);
    let extended = losses(run(with("extended", 3, ScheduleConfig::Constant), false));
    let direct = losses(run(with("direct", 3, ScheduleConfig::Constant), false));
    assert_eq!(extended.0.len(), 3);
    assert_eq!(
        extended, direct,
        "an extended run is the run that long from the start"
    );
    let recorded = read_config(&dir.path().join("extended")).unwrap();
    assert_eq!(recorded, with("extended", 3, ScheduleConfig::Constant));

    let refused = |config: RunConfig| {
        Run::new(config)
            .unwrap()
            .run(&[Device::flex()], Arc::new(Quiet))
            .err()
            .expect("refused")
            .to_string()
    };
    let err = refused(with("extended", 2, ScheduleConfig::Constant));
    assert!(err.contains("holds a run of 3 epochs; 2 would end it"), "{err}");
    run(with("cosine", 1, ScheduleConfig::CosinePerStep), false);
    let err = refused(with("cosine", 2, ScheduleConfig::CosinePerStep));
    assert!(
        err.contains("CosinePerStep learning-rate schedule is laid over the run's length"),
        "{err}"
    );
    // Anything else that differs is another run, as before.
    let err = refused(
        with("extended", 4, ScheduleConfig::Constant)
            .with_mapping(vprompt_mapping::LabelMappingConfig::Random { seed: 1 }),
    );
    assert!(err.contains("holds another run"), "{err}");
}

/// The one check `eval` and `apply` make of several runs: members trained on other data (here,
/// another sample of it) are refused; so is a member whose weights file changed since training.
#[test]
fn an_ensemble_refuses_other_data_and_changed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let cache = dir.path().join("cache");
    let weights = dir.path().join("tiny_resnet.bpk");
    std::fs::copy(
        workspace().join("crates/vprompt-backbone/tests/fixtures/tiny_resnet.bpk"),
        &weights,
    )
    .unwrap();
    let with = |name: &str, shots: usize| {
        let mut c = config(&dir.path().join(name), &cache);
        c.data.few_shot = Some(shots);
        c.backbone.weights = Some(weights.clone());
        c
    };
    run(with("four", 4), false);
    run(
        with("four-again", 4).with_method(MethodConfig::VisualPrompt(training(0.01))),
        false,
    );
    run(with("five", 5), false);
    let dirs =
        |names: &[&str]| -> Vec<std::path::PathBuf> { names.iter().map(|n| dir.path().join(n)).collect() };
    let ensemble = vprompt_run::LoadedEnsemble::load(&dirs(&["four", "four-again"]), &device).unwrap();
    assert_eq!(ensemble.members.len(), 2);
    let err = vprompt_run::LoadedEnsemble::load(&dirs(&["four", "five"]), &device).unwrap_err();
    assert!(err.to_string().contains("trained on other data"), "{err}");
    // The weights file changes after training: every load of these runs refuses it.
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes.push(0);
    std::fs::write(&weights, bytes).unwrap();
    let err = vprompt_run::LoadedEnsemble::load(&dirs(&["four", "four-again"]), &device).unwrap_err();
    assert!(
        err.to_string().contains("has changed since the run was trained"),
        "{err}"
    );
}
