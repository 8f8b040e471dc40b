//! Saving, loading and showing prompts.

use burn::prelude::*;
use vprompt_prompt::*;
use vprompt_testkit::{device_tests, to_vec};

fn templates() -> Vec<PromptConfig> {
    vec![
        PaddingPromptConfig::new(3).with_seed(11).into(),
        FixedPatchPromptConfig::new(4)
            .with_position([1, 2])
            .with_seed(12)
            .into(),
        RandomPatchPromptConfig::new(4)
            .with_eval_location(EvalLocation::Seeded { seed: 5 })
            .with_seed(13)
            .into(),
        FullImagePromptConfig::new()
            .with_space(PromptSpace::Pixel { clamp: true })
            .with_seed(14)
            .into(),
        ShrinkFramePromptConfig::new(2)
            .with_resize(ResizeFilter::Bicubic)
            .with_init(PromptInit::Normal { std: 0.5 })
            .into(),
    ]
}

fn save_then_load_gives_identical_outputs(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let images = Tensor::<4>::random([3, 3, 12, 14], burn::tensor::Distribution::Default, device);
    for (k, config) in templates().into_iter().enumerate() {
        let prompt = config.init([12, 14], device).unwrap();
        let path = dir.path().join(format!("prompt{k}.bpk"));
        prompt.save(&path).unwrap();
        let loaded = Prompt::load(&path, device).unwrap();
        assert_eq!(loaded.config().to_json(), config.to_json());
        assert_eq!(loaded.image_size(), [12, 14]);
        for phase in [Phase::Train { step: 4 }, Phase::Eval { batch: 2 }] {
            let a = to_vec(prompt.apply(images.clone(), phase).unwrap());
            let b = to_vec(loaded.apply(images.clone(), phase).unwrap());
            assert_eq!(a, b, "{config:?}");
        }
        // Saving again replaces the file.
        prompt.save(&path).unwrap();
    }
}

fn loaded_prompt_is_trainable_on_an_autodiff_device(device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.bpk");
    PaddingPromptConfig::new(2)
        .init([8, 8], device)
        .unwrap()
        .save(&path)
        .unwrap();
    let ad = device.clone().autodiff();
    let loaded = Prompt::load(&path, &ad).unwrap();
    let out = loaded
        .apply(Tensor::<4>::ones([1, 3, 8, 8], &ad), Phase::Train { step: 0 })
        .unwrap();
    let grads = out.sum().backward();
    let params = burn::optim::GradientsParams::from_grads(grads, &loaded);
    assert_eq!(params.len(), 1);
}

device_tests!(
    save_then_load_gives_identical_outputs,
    loaded_prompt_is_trainable_on_an_autodiff_device
);

#[cfg(feature = "flex")]
#[test]
fn bad_prompt_files_give_typed_errors() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("nope.bpk");
    let err = Prompt::load(&missing, &device).unwrap_err();
    assert!(
        matches!(err, PromptError::Io { ref path, .. } if path == &missing),
        "{err}"
    );

    let text = dir.path().join("text.bpk");
    std::fs::write(&text, "not a burnpack file").unwrap();
    let err = Prompt::load(&text, &device).unwrap_err();
    assert!(matches!(err, PromptError::InvalidFile { .. }), "{err}");
    assert!(err.to_string().contains("text.bpk"));

    // A Burnpack file from something else (no vprompt header).
    let foreign = dir.path().join("foreign.bpk");
    let prompt = PaddingPromptConfig::new(2).init([8, 8], &device).unwrap();
    let mut store = burn_store_for(&foreign);
    burn_store::ModuleSnapshot::save_into(&prompt, &mut store).unwrap();
    let err = Prompt::load(&foreign, &device).unwrap_err();
    assert!(err.to_string().contains("not written by vprompt"), "{err}");

    // A valid file cut short.
    let good = dir.path().join("good.bpk");
    Prompt::from(prompt).save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.bpk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Prompt::load(&cut, &device).unwrap_err();
    assert!(matches!(err, PromptError::InvalidFile { .. }), "{err}");
}

#[cfg(feature = "flex")]
fn burn_store_for(path: &std::path::Path) -> burn_store::BurnpackStore {
    burn_store::BurnpackStore::from_file(path).auto_extension(false)
}

#[cfg(feature = "flex")]
#[test]
fn png_shows_the_prompt_with_a_symmetric_scale() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let prompt: Prompt = PaddingPromptConfig::new(2)
        .init([10, 12], &device)
        .unwrap()
        .into();
    let path = dir.path().join("prompt.png");
    let scale = prompt.save_png(&path).unwrap();

    let delta = to_vec(prompt.perturbation(Phase::Eval { batch: 0 }));
    let max = delta.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_eq!(scale, max);
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (12, 10));
    // Interior (no prompt) is mid-grey; frame pixels follow 0.5 + 0.5 * v / max.
    assert_eq!(png.get_pixel(5, 5).0, [128, 128, 128]);
    for (i, j) in [(0, 0), (9, 11), (1, 6)] {
        let px = png.get_pixel(j, i).0;
        for c in 0..3 {
            let v = delta[(c * 10 + i as usize) * 12 + j as usize];
            let expected = (255.0 * (0.5 + 0.5 * v / max)).round() as u8;
            assert_eq!(px[c], expected);
        }
    }
    let argmax = delta
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    let (c, rest) = (argmax.0 / 120, argmax.0 % 120);
    let extreme = png.get_pixel((rest % 12) as u32, (rest / 12) as u32).0[c];
    assert!(extreme == 0 || extreme == 255);
}

#[test]
fn symmetric_scale_maps_zero_to_grey() {
    let (pixels, scale) = symmetric_scale(&[0.0, 2.0, -2.0, 1.0]);
    assert_eq!(scale, 2.0);
    assert_eq!(pixels, vec![128, 255, 0, 191]);
    let (pixels, scale) = symmetric_scale(&[0.0, 0.0]);
    assert_eq!((pixels, scale), (vec![128, 128], 0.0));
}
