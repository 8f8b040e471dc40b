//! Label mappings against the numpy reference (`tests/reference/make_reference.py`), tokenizer ids
//! against open_clip's, persistence, and invalid mappings.

use burn::prelude::*;
use vprompt_mapping::*;
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn logits(name: &str, device: &Device) -> Tensor<2> {
    let z = reference(name);
    Tensor::from_data(TensorData::new(z.to_f32(), [z.shape[0], z.shape[1]]), device)
}

fn labels() -> Vec<usize> {
    reference("mapping_labels.npy")
        .values
        .iter()
        .map(|&v| v as usize)
        .collect()
}

/// Accumulates the frequency matrix in three uneven batches, as a fitting pass would.
fn frequencies(name: &str, evidence: Evidence, device: &Device) -> FrequencyMatrix {
    let z = logits(name, device);
    let y = labels();
    let mut f = FrequencyMatrix::new(12, 4);
    for range in [0..7, 7..40, 40..60] {
        f.add(z.clone().slice([range.clone(), 0..12]), &y[range], evidence)
            .unwrap();
    }
    f
}

fn sources_of(mapping: &Mapping) -> Vec<usize> {
    mapping.sources().unwrap().iter().map(|s| s[0]).collect()
}

fn frequency_and_iterative_match_reference(device: &Device) {
    let f = frequencies("mapping_logits.npy", Evidence::Argmax, device);
    let counts: Vec<f32> = f.counts().iter().map(|&v| v as f32).collect();
    assert_close(&counts, &reference("mapping_counts.npy").to_f32(), 0.0, 0.0);
    let flm = LabelMappingConfig::Frequency.fit(&f, device).unwrap();
    let expected: Vec<usize> = reference("mapping_flm.npy")
        .values
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(sources_of(&flm), expected);
    // The mapped logits are the assigned source columns.
    let z = logits("mapping_logits.npy", device);
    let mapped = to_vec(flm.forward(z.clone()).unwrap());
    let zv = to_vec(z);
    for row in 0..60 {
        for t in 0..4 {
            assert_eq!(mapped[row * 4 + t], zv[row * 12 + expected[t]]);
        }
    }
    // ILM: refitted on the next epoch's outputs, it follows the new winners.
    assert_eq!(LabelMappingConfig::ILM.refit_every(), Some(1));
    let epoch2 = frequencies("mapping_logits_epoch2.npy", Evidence::Argmax, device);
    let ilm = LabelMappingConfig::ILM.fit(&epoch2, device).unwrap();
    let expected2: Vec<usize> = reference("mapping_ilm_epoch2.npy")
        .values
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(sources_of(&ilm), expected2);
    assert_ne!(expected, expected2);
}

fn bayesian_mappings_match_reference(device: &Device) {
    let f = frequencies("mapping_logits.npy", Evidence::Argmax, device);
    let blm = LabelMappingConfig::BLM.fit(&f, device).unwrap();
    assert_close(&blm.matrix(), &reference("mapping_blm.npy").to_f32(), 1e-6, 1e-5);
    // Target logits are the raw source logits times omega.
    let z = logits("mapping_logits.npy", device);
    let omega = reference("mapping_blm.npy").values;
    let zv = to_vec(z.clone());
    let mapped = to_vec(blm.forward(z).unwrap());
    for row in [0, 31, 59] {
        for t in 0..4 {
            let want: f64 = (0..12).map(|s| zv[row * 12 + s] as f64 * omega[s * 4 + t]).sum();
            assert!((mapped[row * 4 + t] as f64 - want).abs() < 1e-4);
        }
    }
    for (k, file) in [
        (None, "mapping_blm_plus_k1.npy"),
        (Some(3), "mapping_blm_plus_k3.npy"),
    ] {
        let config = LabelMappingConfig::BayesianPlus {
            lambda: 1.0,
            top_k: k,
            every: 1,
        };
        let f = frequencies("mapping_logits.npy", config.evidence(4), device);
        let blm_plus = config.fit(&f, device).unwrap();
        assert_close(&blm_plus.matrix(), &reference(file).to_f32(), 1e-6, 1e-5);
    }
}

fn static_mappings(device: &Device) {
    let z = Tensor::<2>::from_data(
        TensorData::new((0..2 * 8).map(|v| v as f32).collect::<Vec<_>>(), [2, 8]),
        device,
    );
    let first = LabelMappingConfig::FirstN.init(8, 3, device).unwrap();
    assert_eq!(
        to_vec(first.forward(z.clone()).unwrap()),
        [0.0, 1.0, 2.0, 8.0, 9.0, 10.0]
    );
    let manual = LabelMappingConfig::Manual {
        sources: vec![vec![7], vec![1, 3]],
    }
    .init(8, 2, device)
    .unwrap();
    assert_eq!(
        to_vec(manual.forward(z.clone()).unwrap()),
        [7.0, 2.0, 15.0, 10.0],
        "several sources averaged"
    );
    let a = LabelMappingConfig::Random { seed: 4 }
        .init(1000, 10, device)
        .unwrap();
    let b = LabelMappingConfig::Random { seed: 4 }
        .init(1000, 10, device)
        .unwrap();
    let c = LabelMappingConfig::Random { seed: 5 }
        .init(1000, 10, device)
        .unwrap();
    assert_eq!(a.sources(), b.sources());
    assert_ne!(a.sources(), c.sources());
    let mut used = sources_of(&a);
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 10, "one-to-one");
    assert_ne!(sources_of(&a), (0..10).collect::<Vec<_>>());
}

fn saved_mappings_predict_identically(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let f = frequencies("mapping_logits.npy", Evidence::Argmax, device);
    let z = logits("mapping_logits.npy", device);
    for (name, mapping) in [
        ("flm", LabelMappingConfig::Frequency.fit(&f, device).unwrap()),
        ("blm", LabelMappingConfig::BLM.fit(&f, device).unwrap()),
        (
            "manual",
            LabelMappingConfig::Manual {
                sources: vec![vec![0, 5], vec![2], vec![3], vec![11]],
            }
            .init(12, 4, device)
            .unwrap(),
        ),
    ] {
        let path = dir.path().join(format!("{name}.bpk"));
        mapping.save(&path).unwrap();
        let loaded = Mapping::load(&path, device).unwrap();
        assert_eq!(loaded.kind(), mapping.kind());
        assert_eq!(
            to_vec(loaded.forward(z.clone()).unwrap()),
            to_vec(mapping.forward(z.clone()).unwrap())
        );
    }
}

device_tests!(
    frequency_and_iterative_match_reference,
    bayesian_mappings_match_reference,
    static_mappings,
    saved_mappings_predict_identically
);

#[test]
fn greedy_ties_go_to_the_first_entry() {
    let ties =
        FrequencyMatrix::from_counts(4, 3, vec![2., 2., 0., 2., 2., 1., 0., 1., 2., 1., 0., 0.]).unwrap();
    let expected: Vec<usize> = reference("mapping_ties.npy")
        .values
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(ties.greedy_one_to_one().unwrap(), expected);
}

#[test]
fn tokenizer_matches_open_clip() {
    let texts: Vec<String> = std::fs::read_to_string(format!(
        "{}/tests/reference/tokenizer_texts.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .map(String::from)
    .collect();
    let expected = reference("tokenizer_ids.npy");
    assert_eq!(expected.shape, [texts.len(), 77]);
    let ids = tokenize(&Tokenizer::new(), &texts);
    for (k, text) in texts.iter().enumerate() {
        let want: Vec<i64> = expected.values[k * 77..(k + 1) * 77]
            .iter()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(ids[k * 77..(k + 1) * 77], want[..], "{text:?}");
    }
}

#[test]
fn class_names_and_templates() {
    assert_eq!(refine_class_name("Ankle_boot"), "ankle boot");
    assert_eq!(refine_class_name("T-shirt/top"), "t shirt/top");
    assert_eq!(fill(PAPER_TEMPLATE, "cat"), "This is a photo of a cat");
    assert_eq!(fill(CLEVR_TEMPLATE, "three"), "This is a photo of three objects");
    assert_eq!(
        fill(CAMELYON17_TEMPLATE, "not containing"),
        "a tissue region not containing tumor"
    );
    assert_eq!(IMAGENET_TEMPLATES.len(), 80);
    assert!(IMAGENET_TEMPLATES.iter().all(|t| t.matches("{}").count() == 1));
}

#[cfg(feature = "flex")]
#[test]
fn invalid_mappings_give_typed_errors() {
    let device = Device::flex();
    let e = LabelMappingConfig::FirstN.init(5, 10, &device).unwrap_err();
    assert!(
        matches!(
            e,
            MappingError::TooManyClasses {
                classes: 10,
                sources: 5,
                ..
            }
        ),
        "{e}"
    );
    let e = LabelMappingConfig::Manual {
        sources: vec![vec![0], vec![12]],
    }
    .init(10, 2, &device)
    .unwrap_err();
    assert!(
        matches!(
            e,
            MappingError::SourceOutOfRange {
                target: 1,
                source_index: 12,
                ..
            }
        ),
        "{e}"
    );
    let e = LabelMappingConfig::Manual {
        sources: vec![vec![3], vec![1, 3]],
    }
    .init(10, 2, &device)
    .unwrap_err();
    assert!(
        matches!(
            e,
            MappingError::DuplicateSource {
                source_index: 3,
                first: 0,
                second: 1
            }
        ),
        "{e}"
    );
    let e = LabelMappingConfig::Manual {
        sources: vec![vec![3], vec![]],
    }
    .init(10, 2, &device)
    .unwrap_err();
    assert!(matches!(e, MappingError::EmptyTarget(1)), "{e}");
    let e = LabelMappingConfig::Manual {
        sources: vec![vec![3]],
    }
    .init(10, 2, &device)
    .unwrap_err();
    assert!(matches!(e, MappingError::InvalidConfig(_)), "{e}");
    let e = LabelMappingConfig::Iterative { every: 0 }
        .init(10, 2, &device)
        .unwrap_err();
    assert!(e.to_string().contains("at least 1 epoch"), "{e}");
    let e = LabelMappingConfig::Frequency.init(10, 2, &device).unwrap_err();
    assert!(e.to_string().contains("call `fit`"), "{e}");
    // A class missing from the fitting data, a label out of range, a bad lambda.
    let mut f = FrequencyMatrix::new(6, 3);
    let z = Tensor::<2>::zeros([2, 6], &device);
    f.add(z.clone(), &[0, 1], Evidence::Argmax).unwrap();
    let e = LabelMappingConfig::Frequency.fit(&f, &device).unwrap_err();
    assert!(matches!(e, MappingError::MissingClass { class: 2, .. }), "{e}");
    let e = f.add(z.clone(), &[0, 3], Evidence::Argmax).unwrap_err();
    assert!(matches!(e, MappingError::LabelOutOfRange { label: 3, .. }), "{e}");
    let e = f.add(z, &[0], Evidence::Argmax).unwrap_err();
    assert!(matches!(e, MappingError::Shape { .. }), "{e}");
    f.add(Tensor::<2>::zeros([1, 6], &device), &[2], Evidence::Argmax)
        .unwrap();
    let e = LabelMappingConfig::Bayesian {
        lambda: f64::NAN,
        every: 1,
    }
    .fit(&f, &device)
    .unwrap_err();
    assert!(matches!(e, MappingError::InvalidConfig(_)), "{e}");
    // Source outputs of the wrong width.
    let first = LabelMappingConfig::FirstN.init(8, 3, &device).unwrap();
    let e = first.forward(Tensor::<2>::zeros([2, 9], &device)).unwrap_err();
    assert!(e.to_string().contains("[batch, 8]"), "{e}");
    // Bad files.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    std::fs::write(&path, b"junk").unwrap();
    assert!(matches!(
        Mapping::load(&path, &device),
        Err(MappingError::InvalidFile { .. })
    ));
    assert!(matches!(
        Mapping::load(dir.path().join("nope.bpk"), &device),
        Err(MappingError::Io { .. })
    ));
}

#[test]
fn config_round_trips_through_json() {
    for config in [
        LabelMappingConfig::FirstN,
        LabelMappingConfig::Random { seed: 3 },
        LabelMappingConfig::Manual {
            sources: vec![vec![1, 2], vec![5]],
        },
        LabelMappingConfig::ILM,
        LabelMappingConfig::BLM_PLUS,
        LabelMappingConfig::FullyMap,
        LabelMappingConfig::LinearProbe,
    ] {
        let json = serde_json::to_string(&config).unwrap();
        let back: LabelMappingConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}

/// BiT-M's 21,843 ImageNet-21k outputs go through every label mapping like ImageNet-1k's 1000:
/// images of class `t` peak at source `1000 t + 7` (past the first thousand), and every fitted
/// mapping finds those sources, every data-free one builds, and the mapped logits are `[N, 10]`.
#[cfg(feature = "flex")]
#[test]
fn every_label_mapping_reads_imagenet_21k_outputs() {
    const SOURCES: usize = 21_843;
    const CLASSES: usize = 10;
    let device = Device::flex();
    let labels: Vec<usize> = (0..40).map(|i| i % CLASSES).collect();
    let mut values = vec![0.0f32; labels.len() * SOURCES];
    for (row, &label) in labels.iter().enumerate() {
        values[row * SOURCES + 1000 * label + 7] = 8.0;
    }
    let outputs = Tensor::<2>::from_data(TensorData::new(values, [labels.len(), SOURCES]), &device);
    let configs = [
        LabelMappingConfig::FirstN,
        LabelMappingConfig::Random { seed: 3 },
        LabelMappingConfig::Manual {
            sources: (0..CLASSES).map(|t| vec![1000 * t + 7, 21_000 + t]).collect(),
        },
        LabelMappingConfig::Frequency,
        LabelMappingConfig::Iterative { every: 1 },
        LabelMappingConfig::Bayesian {
            lambda: 1.0,
            every: 1,
        },
        LabelMappingConfig::BayesianPlus {
            lambda: 1.0,
            top_k: None,
            every: 1,
        },
    ];
    for config in configs {
        let mut frequencies = FrequencyMatrix::new(SOURCES, CLASSES);
        frequencies
            .add(outputs.clone(), &labels, config.evidence(CLASSES))
            .unwrap();
        let mapping = config.fit(&frequencies, &device).unwrap();
        assert_eq!(mapping.source_dim(), SOURCES, "{config:?}");
        let mapped = mapping.forward(outputs.clone()).unwrap();
        assert_eq!(mapped.dims(), [labels.len(), CLASSES], "{config:?}");
        let data_driven = !matches!(
            config,
            LabelMappingConfig::FirstN | LabelMappingConfig::Random { .. }
        );
        if data_driven {
            let predicted: Vec<usize> = mapped
                .argmax(1)
                .into_data()
                .iter::<i64>()
                .map(|v| v as usize)
                .collect();
            assert_eq!(predicted, labels, "{config:?}");
        }
    }
}

/// A learned mapping is `x @ W + b` (checked against the host product), starts as PyTorch's
/// `nn.Linear` does (uniform in ±1/sqrt(inputs), a function of the seed), may map fewer inputs
/// to more classes, and reloads with its bias and parameter ids (an optimiser's state is keyed by
/// them).
#[cfg(feature = "flex")]
#[test]
fn learned_mappings_are_affine_seeded_and_reload_exactly() {
    use burn::module::Module;
    let device = Device::flex();
    let z = logits("mapping_logits.npy", &device); // [60, 12]
    let mapping = LabelMappingConfig::FullyMap
        .init_seeded(12, 4, 7, &device)
        .unwrap();
    assert!(mapping.is_learned());
    assert_eq!(mapping.input(), MappingInput::SourceOutputs);
    assert_eq!(
        *mapping.kind(),
        MappingKind::Learned {
            input: MappingInput::SourceOutputs
        }
    );
    let (w, b) = (mapping.matrix(), mapping.bias().unwrap());
    assert_eq!((w.len(), b.len()), (48, 4));
    let bound = 1.0 / 12f32.sqrt();
    assert!(w.iter().chain(&b).all(|v| v.abs() <= bound));
    let spread = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 0.8 * bound,
        "uniform over the whole range: max |w| {spread}"
    );
    let x = to_vec(z.clone());
    let expected: Vec<f32> = (0..60)
        .flat_map(|i| {
            let (x, w, b) = (&x, &w, &b);
            (0..4).map(move |c| b[c] + (0..12).map(|s| x[i * 12 + s] * w[s * 4 + c]).sum::<f32>())
        })
        .collect();
    assert_close(
        &to_vec(mapping.forward(z.clone()).unwrap()),
        &expected,
        1e-5,
        1e-5,
    );

    let same = LabelMappingConfig::FullyMap
        .init_seeded(12, 4, 7, &device)
        .unwrap();
    let other = LabelMappingConfig::FullyMap
        .init_seeded(12, 4, 8, &device)
        .unwrap();
    assert_eq!(same.matrix(), w);
    assert_ne!(other.matrix(), w);

    // More classes than inputs is fine for a linear layer (not for a label mapping).
    let probe = LabelMappingConfig::LinearProbe.init(3, 5, &device).unwrap();
    assert_eq!((probe.source_dim(), probe.num_classes()), (3, 5));
    assert_eq!(probe.input(), MappingInput::Features);
    assert!(LabelMappingConfig::FirstN.init(3, 5, &device).is_err());
    assert!(LabelMappingConfig::FullyMap.init(0, 5, &device).is_err());
    assert!(
        !LabelMappingConfig::FullyMap.needs_fit() && LabelMappingConfig::FullyMap.refit_every().is_none()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fully-map.bpk");
    mapping.save(&path).unwrap();
    let loaded = Mapping::load(&path, &device).unwrap();
    assert_eq!(loaded.kind(), mapping.kind());
    assert_eq!((loaded.matrix(), loaded.bias()), (w.clone(), Some(b.clone())));
    assert_eq!(
        to_vec(loaded.forward(z.clone()).unwrap()),
        to_vec(mapping.forward(z).unwrap())
    );
    let ids = |m: &Mapping| {
        let mut ids = Vec::new();
        m.visit(&mut Ids(&mut ids));
        ids
    };
    assert_eq!(ids(&loaded), ids(&mapping));
    assert_eq!(ids(&mapping).len(), 2, "weights and bias");
}

/// Collects a module's parameter ids.
struct Ids<'a>(&'a mut Vec<burn::module::ParamId>);

impl burn::module::ModuleVisitor for Ids<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.push(param.id);
    }
}
