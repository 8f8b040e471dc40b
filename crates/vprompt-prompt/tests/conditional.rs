//! Input-conditional prompts: a fixed template's prompt plus a per-image one from a small
//! generator. Values against numpy (`tests/reference/make_reference.py`, item 3).

use burn::prelude::*;
use vprompt_prompt::*;
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn tensor(array: &npy::NpyArray, device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = array.shape.clone().try_into().expect("4-d reference");
    Tensor::from_data(TensorData::new(array.to_f32(), shape), device)
}

fn conditional(template: impl Into<PromptConfig>) -> ConditionalPromptConfig {
    ConditionalPromptConfig::new(Box::new(template.into()))
}

/// Seeded values of a prompt's learned layout (what a zeroth-order optimiser would write).
fn random_learned(prompt: &Prompt, seed: u64) -> Tensor<4> {
    let learned = prompt.learned();
    let count = learned.shape().num_elements();
    let values: Vec<f32> = (0..count)
        .map(|k| (((k as u64 + 1) * (seed * 2 + 1)) as f32 * 0.618).sin() * 0.4)
        .collect();
    Tensor::from_data(TensorData::new(values, learned.dims()), &learned.device())
}

/// The prompted images match numpy's `x + v + m * G(x)` for given learned values: the learned
/// layout, the pooling, the convolutions with their ReLUs, the upsampling and the frame mask.
fn prompted_images_match_numpy(device: &Device) {
    let config = conditional(PaddingPromptConfig::new(2))
        .with_hidden(4)
        .with_downsample(4);
    let prompt: Prompt = PromptConfig::from(config).init([12, 16], device).unwrap();
    let learned = reference("conditional_learned.npy");
    assert_eq!(prompt.learned().dims(), [1, 1, 1, learned.values.len()]);
    let prompt = prompt.with_learned(tensor(&learned, device)).unwrap();
    let images = tensor(&reference("conditional_input.npy"), device);
    for phase in [Phase::Train { step: 3 }, Phase::Eval { batch: 0 }] {
        let prompted = to_vec(prompt.apply(images.clone(), phase).unwrap());
        assert_close(
            &prompted,
            &reference("conditional_expected.npy").to_f32(),
            1e-5,
            1e-4,
        );
    }
}

/// A new conditional prompt is exactly its template (the generator's last layer starts at zero);
/// its parameters are the template's plus the generator's.
fn a_new_conditional_prompt_is_its_template(device: &Device) {
    let template = PaddingPromptConfig::new(30).with_seed(3);
    let prompt = conditional(template.clone()).init([224, 224], device).unwrap();
    assert_eq!(prompt.template().num_params(), 69_840);
    assert_eq!(
        prompt.generator_params(),
        3 * 16 * 9 + 16 + 16 * 16 * 9 + 16 + 16 * 3 * 9 + 3
    );
    assert_eq!(prompt.generator_params(), 3_203);
    assert_eq!(prompt.num_params(), 69_840 + 3_203);
    let fixed = template.init([224, 224], device).unwrap();
    let images = Tensor::<4>::random([2, 3, 224, 224], burn::tensor::Distribution::Default, device);
    let phase = Phase::Eval { batch: 0 };
    assert_eq!(
        to_vec(prompt.apply(images.clone(), phase).unwrap()),
        to_vec(fixed.apply(images, phase).unwrap())
    );
}

/// Once the generator is non-zero, two images get different perturbations, and only on the
/// template's pixels: a frame's interior, or everything but the patch at its location.
fn the_perturbation_depends_on_the_image_and_stays_on_the_template(device: &Device) {
    let size = [16, 20];
    let templates: Vec<PromptConfig> = vec![
        PaddingPromptConfig::new(3).into(),
        ShrinkFramePromptConfig::new(3).into(),
        FixedPatchPromptConfig::new(5).with_position([2, 7]).into(),
        RandomPatchPromptConfig::new(5).into(),
        FullImagePromptConfig::new()
            .with_space(PromptSpace::Pixel { clamp: false })
            .into(),
    ];
    for template in templates {
        let config = PromptConfig::from(conditional(template.clone()).with_downsample(2));
        let prompt = config.init(size, device).unwrap();
        let prompt = prompt.clone().with_learned(random_learned(&prompt, 1)).unwrap();
        let [h, w] = prompt.input_size();
        let images = Tensor::<4>::random([2, 3, h, w], burn::tensor::Distribution::Default, device);
        for phase in [Phase::Train { step: 5 }, Phase::Eval { batch: 1 }] {
            let framed = prompt.unprompted(images.clone()).unwrap();
            let delta = to_vec(prompt.apply(images.clone(), phase).unwrap() - framed);
            // The template's covered pixels in this phase: where its own prompt of ones lands.
            let Prompt::Conditional(inner) = &prompt else {
                unreachable!()
            };
            let template = inner.template();
            let ones = template
                .clone()
                .with_learned(template.learned().ones_like())
                .unwrap();
            let covered = to_vec(ones.perturbation(phase));
            let per_image = covered.len();
            for (k, d) in delta.iter().enumerate() {
                if covered[k % per_image] == 0.0 {
                    assert_eq!(*d, 0.0, "{template:?}: value {k} is off the template");
                }
            }
            let (a, b) = delta.split_at(per_image);
            let differing = a.iter().zip(b).filter(|(x, y)| (*x - *y).abs() > 1e-6).count();
            let on_template = covered.iter().filter(|&&c| c != 0.0).count();
            assert!(
                differing > on_template / 2,
                "{template:?}: the two images' perturbations differ at {differing} of {on_template} pixels"
            );
        }
    }
}

/// The learned values read and written as one row: round trip, the mask counts exactly the
/// learned values, and a wrong length is refused.
fn learned_values_round_trip(device: &Device) {
    let prompt: Prompt = PromptConfig::from(conditional(PaddingPromptConfig::new(2)).with_hidden(3))
        .init([8, 8], device)
        .unwrap();
    let stored = 3 * 8 * 8 + prompt_generator_params(3, 3);
    assert_eq!(prompt.learned().dims(), [1, 1, 1, stored]);
    let mask = to_vec(prompt.learned_mask());
    assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), prompt.num_params());
    let values = random_learned(&prompt, 2);
    let updated = prompt.clone().with_learned(values.clone()).unwrap();
    // The frame's unused interior is zeroed, everything else is kept.
    let expected: Vec<f32> = to_vec(values).iter().zip(&mask).map(|(v, m)| v * m).collect();
    assert_eq!(to_vec(updated.learned()), expected);
    let err = prompt
        .with_learned(Tensor::<4>::zeros([1, 1, 1, stored - 1], device))
        .unwrap_err();
    assert!(err.to_string().contains(&format!("[1, 1, 1, {stored}]")), "{err}");
}

/// Weights of a generator with `hidden` channels over `channels`-channel images.
fn prompt_generator_params(channels: usize, hidden: usize) -> usize {
    9 * (channels * hidden + hidden * hidden + hidden * channels) + 2 * hidden + channels
}

/// Saved and loaded, the generator comes back with its values.
fn save_then_load_keeps_the_generator(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let config = conditional(RandomPatchPromptConfig::new(4).with_seed(2)).with_seed(9);
    let prompt: Prompt = PromptConfig::from(config.clone()).init([12, 14], device).unwrap();
    let prompt = prompt.clone().with_learned(random_learned(&prompt, 3)).unwrap();
    let path = dir.path().join("conditional.bpk");
    prompt.save(&path).unwrap();
    let loaded = Prompt::load(&path, device).unwrap();
    assert_eq!(loaded.config(), PromptConfig::Conditional(config));
    let images = Tensor::<4>::random([3, 3, 12, 14], burn::tensor::Distribution::Default, device);
    for phase in [Phase::Train { step: 4 }, Phase::Eval { batch: 2 }] {
        assert_eq!(
            to_vec(prompt.apply(images.clone(), phase).unwrap()),
            to_vec(loaded.apply(images.clone(), phase).unwrap())
        );
    }
}

device_tests!(
    prompted_images_match_numpy,
    a_new_conditional_prompt_is_its_template,
    the_perturbation_depends_on_the_image_and_stays_on_the_template,
    learned_values_round_trip,
    save_then_load_keeps_the_generator,
);

#[cfg(feature = "flex")]
#[test]
fn invalid_conditional_configs_are_refused() {
    let device = Device::flex();
    let nested = conditional(conditional(PaddingPromptConfig::new(2)));
    let err = nested.init([8, 8], &device).unwrap_err();
    assert!(matches!(err, PromptError::NestedConditional), "{err}");
    let err = conditional(PaddingPromptConfig::new(2))
        .with_hidden(0)
        .init([8, 8], &device)
        .unwrap_err();
    assert!(err.to_string().contains("`hidden` must be at least 1"), "{err}");
    // The template's own checks apply.
    let err = conditional(PaddingPromptConfig::new(4))
        .init([8, 8], &device)
        .unwrap_err();
    assert!(matches!(err, PromptError::FrameTooWide { .. }), "{err}");
    // From a run config's JSON, defaults filled in.
    let parsed =
        PromptConfig::from_json(r#"{"Conditional": {"template": {"Padding": {"pad": 30}}}}"#).unwrap();
    assert_eq!(parsed, conditional(PaddingPromptConfig::new(30)).into());
    assert!(
        PromptConfig::from_json(r#"{"Conditional": {"template": {"Padding": {"pad": 3}}, "hiden": 4}}"#)
            .is_err()
    );
}
