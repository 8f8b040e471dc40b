//! Geometry, parameter counts and shapes of every template, against the paper's formulas and
//! the released code's construction (`tests/reference/make_reference.py`).

use burn::prelude::*;
use vprompt_prompt::*;
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn all_templates() -> Vec<PromptConfig> {
    vec![
        PaddingPromptConfig::new(3).into(),
        FixedPatchPromptConfig::new(4).with_position([2, 5]).into(),
        RandomPatchPromptConfig::new(4).into(),
        FullImagePromptConfig::new().into(),
        ShrinkFramePromptConfig::new(3).into(),
    ]
}

fn output_shapes(device: &Device) {
    for config in all_templates() {
        let prompt = config.init([16, 20], device).unwrap();
        let images = Tensor::<4>::ones([5, 3, 16, 20], device);
        for phase in [Phase::Train { step: 7 }, Phase::Eval { batch: 0 }] {
            let out = prompt.apply(images.clone(), phase).unwrap();
            assert_eq!(out.dims(), [5, 3, 16, 20], "{config:?}");
            assert_eq!(prompt.perturbation(phase).dims(), [1, 3, 16, 20]);
        }
    }
}

/// The frame covers exactly the pixels of the released code's PadPrompter, square or not.
fn padding_matches_bahng_pad_prompter(device: &Device) {
    for (h, w, p) in [(7, 9, 2), (224, 224, 30), (32, 20, 5)] {
        let expected = reference(&format!("bahng_pad_mask_{h}x{w}_p{p}.npy"));
        assert_eq!(expected.shape, [1, 3, h, w]);
        let prompt = PaddingPromptConfig::new(p).init([h, w], device).unwrap();
        let covered: Vec<f32> = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }))
            .iter()
            .map(|v| if *v != 0.0 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(covered, expected.to_f32(), "{h}x{w} p={p}");
        let paper = 2 * 3 * p * (h - p) + 2 * 3 * p * (w - p);
        assert_eq!(prompt.num_params(), paper);
        assert_eq!(expected.values.iter().sum::<f64>() as usize, paper);
    }
}

/// Shrink-and-frame resizes like PyTorch's bilinear `align_corners=False` and zero-pads.
fn shrink_frame_matches_reference_resize(device: &Device) {
    let input = reference("shrink_frame_input.npy");
    let expected = reference("shrink_frame_expected.npy");
    let prompt = ShrinkFramePromptConfig::new(2).init([10, 12], device).unwrap();
    assert_eq!(prompt.input_size(), [6, 8]);
    let images = Tensor::<4>::from_data(TensorData::new(input.to_f32(), [1, 3, 10, 12]), device);
    let framed = to_vec(prompt.frame_images(images.clone()).unwrap());
    assert_close(&framed, &expected.to_f32(), 1e-6, 1e-5);
    // Zero init: the prompted image is the framed image; images already at the interior size
    // are only padded.
    let prompted = to_vec(prompt.apply(images, Phase::Eval { batch: 0 }).unwrap());
    assert_close(&prompted, &expected.to_f32(), 1e-6, 1e-5);
    let inner = Tensor::<4>::ones([2, 3, 6, 8], device);
    let framed = prompt.frame_images(inner).unwrap();
    assert_eq!(framed.dims(), [2, 3, 10, 12]);
    assert_eq!(to_vec(framed).iter().sum::<f32>(), (2 * 3 * 6 * 8) as f32);
}

fn fixed_patch_sits_at_its_position(device: &Device) {
    let prompt = FixedPatchPromptConfig::new(3)
        .with_position([4, 1])
        .init([10, 8], device)
        .unwrap();
    let delta = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }));
    for c in 0..3 {
        for i in 0..10 {
            for j in 0..8 {
                let inside = (4..7).contains(&i) && (1..4).contains(&j);
                let v = delta[(c * 10 + i) * 8 + j];
                assert_eq!(v != 0.0, inside, "channel {c} pixel ({i}, {j})");
            }
        }
    }
    // The default is the released code's top-left corner.
    assert_eq!(FixedPatchPromptConfig::new(3).position, [0, 0]);
}

fn zero_init_leaves_images_unchanged(device: &Device) {
    let images = Tensor::<4>::random([2, 3, 12, 12], burn::tensor::Distribution::Default, device);
    let configs: Vec<PromptConfig> = vec![
        PaddingPromptConfig::new(2).with_init(PromptInit::Zeros).into(),
        FixedPatchPromptConfig::new(2).with_init(PromptInit::Zeros).into(),
        FullImagePromptConfig::new().with_init(PromptInit::Zeros).into(),
    ];
    for config in configs {
        let prompt = config.init([12, 12], device).unwrap();
        let out = prompt.apply(images.clone(), Phase::Eval { batch: 0 }).unwrap();
        assert_eq!(to_vec(out), to_vec(images.clone()));
    }
}

fn pixel_space_clamps_to_valid_pixels(device: &Device) {
    let images = Tensor::<4>::full([2, 3, 12, 12], 0.5, device);
    let clamped = FullImagePromptConfig::new()
        .with_space(PromptSpace::Pixel { clamp: true })
        .with_init(PromptInit::Normal { std: 10.0 })
        .init([12, 12], device)
        .unwrap();
    let out = to_vec(clamped.apply(images.clone(), Phase::Eval { batch: 0 }).unwrap());
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(
        out.contains(&0.0) && out.contains(&1.0),
        "std 10 must saturate some pixels"
    );
    let unclamped = FullImagePromptConfig::new()
        .with_space(PromptSpace::Pixel { clamp: false })
        .with_init(PromptInit::Normal { std: 10.0 })
        .init([12, 12], device)
        .unwrap();
    let out = to_vec(unclamped.apply(images, Phase::Eval { batch: 0 }).unwrap());
    assert!(out.iter().any(|v| !(0.0..=1.0).contains(v)));
}

fn same_seed_same_values_other_seed_other_values(device: &Device) {
    let a = PaddingPromptConfig::new(2)
        .with_seed(5)
        .init([8, 8], device)
        .unwrap();
    let b = PaddingPromptConfig::new(2)
        .with_seed(5)
        .init([8, 8], device)
        .unwrap();
    let c = PaddingPromptConfig::new(2)
        .with_seed(6)
        .init([8, 8], device)
        .unwrap();
    let phase = Phase::Eval { batch: 0 };
    assert_eq!(to_vec(a.perturbation(phase)), to_vec(b.perturbation(phase)));
    assert_ne!(to_vec(a.perturbation(phase)), to_vec(c.perturbation(phase)));
    // randn: unit-variance draws on the frame.
    let big = PaddingPromptConfig::new(30).init([224, 224], device).unwrap();
    let values: Vec<f32> = to_vec(big.perturbation(phase))
        .into_iter()
        .filter(|v| *v != 0.0)
        .collect();
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "mean {mean} var {var}"
    );
}

device_tests!(
    output_shapes,
    padding_matches_bahng_pad_prompter,
    shrink_frame_matches_reference_resize,
    fixed_patch_sits_at_its_position,
    zero_init_leaves_images_unchanged,
    pixel_space_clamps_to_valid_pixels,
    same_seed_same_values_other_seed_other_values,
);

#[cfg(feature = "flex")]
#[test]
fn num_params_follow_the_paper() {
    let device = Device::flex();
    let padding = |p, size| {
        PaddingPromptConfig::new(p)
            .init(size, &device)
            .unwrap()
            .num_params()
    };
    assert_eq!(padding(30, [224, 224]), 69_840);
    assert_eq!(padding(1, [224, 224]), 2 * 3 * 223 + 2 * 3 * 223);
    // The widest frame leaves a 2x2 interior: every pixel but 4 per channel.
    assert_eq!(padding(111, [224, 224]), 3 * (224 * 224 - 4));
    assert_eq!(padding(30, [224, 160]), 2 * 3 * 30 * 194 + 2 * 3 * 30 * 130);
    let shrink = ShrinkFramePromptConfig::new(30)
        .init([224, 224], &device)
        .unwrap();
    assert_eq!(shrink.num_params(), 69_840);

    for p in [1, 30, 224] {
        let fixed = FixedPatchPromptConfig::new(p).init([224, 224], &device).unwrap();
        let random = RandomPatchPromptConfig::new(p).init([224, 224], &device).unwrap();
        assert_eq!(fixed.num_params(), 3 * p * p);
        assert_eq!(random.num_params(), 3 * p * p);
    }
    let full = FullImagePromptConfig::new().init([224, 224], &device).unwrap();
    assert_eq!(full.num_params(), 3 * 224 * 224);
    // Through the run-time enum and the trait.
    let any = PromptConfig::from(PaddingPromptConfig::new(30))
        .init([224, 224], &device)
        .unwrap();
    assert_eq!(any.num_params(), 69_840);
    assert_eq!(VisualPrompt::num_params(&any), 69_840);
}

#[cfg(feature = "flex")]
#[test]
fn single_pixel_prompt_changes_one_pixel() {
    let device = Device::flex();
    let prompt = FixedPatchPromptConfig::new(1)
        .with_position([5, 6])
        .init([224, 224], &device)
        .unwrap();
    assert_eq!(prompt.num_params(), 3);
    let images = Tensor::<4>::zeros([1, 3, 224, 224], &device);
    let out = to_vec(prompt.apply(images, Phase::Eval { batch: 0 }).unwrap());
    let changed: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i)
        .collect();
    let at = |c: usize| (c * 224 + 5) * 224 + 6;
    assert_eq!(changed, vec![at(0), at(1), at(2)]);
}

#[cfg(feature = "flex")]
#[test]
fn random_patch_draws_are_seeded_bounded_and_spread() {
    let device = Device::flex();
    let make = |seed, eval| {
        RandomPatchPromptConfig::new(3)
            .with_seed(seed)
            .with_eval_location(eval)
            .init([10, 12], &device)
            .unwrap()
    };
    let fixed = EvalLocation::Fixed { position: [7, 9] };
    let a = make(1, fixed);
    let b = make(1, fixed);
    let c = make(2, fixed);
    let train = |p: &RandomPatchPrompt| {
        (0..300)
            .map(|s| p.location(Phase::Train { step: s }))
            .collect::<Vec<_>>()
    };
    let (la, lb, lc) = (train(&a), train(&b), train(&c));
    assert_eq!(la, lb, "same seed, same locations");
    assert_ne!(la, lc, "another seed, other locations");
    assert!(la.iter().all(|[r, c]| *r <= 7 && *c <= 9), "patch stays inside");
    // Every row 0..=7 and column 0..=9 is reachable and reached in 300 draws.
    for r in 0..=7 {
        assert!(la.iter().any(|l| l[0] == r), "row {r} never drawn");
    }
    for col in 0..=9 {
        assert!(la.iter().any(|l| l[1] == col), "column {col} never drawn");
    }
    // Consecutive steps move the patch (not one draw per run).
    assert!(la.windows(2).filter(|w| w[0] != w[1]).count() > 250);
    // The patch is drawn where `location` says.
    let delta = to_vec(a.perturbation(Phase::Train { step: 3 }));
    let [r, col] = a.location(Phase::Train { step: 3 });
    assert!(delta[r * 12 + col] != 0.0 && delta.iter().filter(|v| **v != 0.0).count() == 27);

    // Evaluation: fixed location regardless of batch, or reproducible seeded draws.
    assert!((0..20).all(|b| a.location(Phase::Eval { batch: b }) == [7, 9]));
    let s1 = make(1, EvalLocation::Seeded { seed: 9 });
    let s2 = make(3, EvalLocation::Seeded { seed: 9 });
    let eval = |p: &RandomPatchPrompt| {
        (0..50)
            .map(|b| p.location(Phase::Eval { batch: b }))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        eval(&s1),
        eval(&s2),
        "evaluation draws depend on the eval seed only"
    );
    assert_ne!(
        eval(&s1),
        train(&s1)[..50].to_vec(),
        "evaluation and training streams differ"
    );
}
