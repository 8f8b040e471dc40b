//! Prompt application at batch 32, 224 x 224, on every compiled backend: forward only, and
//! forward + backward to the prompt (what a training step adds on top of the backbone).
//!
//! Run: `cargo bench --bench prompt` (add `--features wgpu` / `cuda` / `cpu` for other backends;
//! `VPROMPT_BENCH_SECONDS=10` for longer runs).

use burn::tensor::Distribution;
use vprompt::prelude::*;
use vprompt_examples::bench::{Measurement, measure, print_table};
use vprompt_examples::bench_devices;

const BATCH: usize = 32;
const SIZE: [usize; 2] = [224, 224];

fn templates() -> Vec<(&'static str, PromptConfig, [usize; 2])> {
    vec![
        ("padding p=30", PaddingPromptConfig::new(30).into(), SIZE),
        ("fixed patch p=30", FixedPatchPromptConfig::new(30).into(), SIZE),
        ("random patch p=30", RandomPatchPromptConfig::new(30).into(), SIZE),
        ("full image", FullImagePromptConfig::new().into(), SIZE),
        (
            "shrink-frame p=30 (resize 224->164)",
            ShrinkFramePromptConfig::new(30).into(),
            SIZE,
        ),
        (
            "shrink-frame p=30 (input at 164)",
            ShrinkFramePromptConfig::new(30).into(),
            [164, 164],
        ),
    ]
}

fn main() {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let mut rows: Vec<Measurement> = Vec::new();
    for (backend, device) in bench_devices().expect("a usable --device or VPROMPT_DEVICE") {
        for (name, config, input) in templates() {
            let prompt = config.init(SIZE, &device).expect("valid config");
            let images = Tensor::<4>::random([BATCH, 3, input[0], input[1]], Distribution::Default, &device);
            let mut step = 0;
            rows.push(measure(
                &format!("apply {name}"),
                &backend,
                BATCH,
                &device,
                || {
                    let out = prompt
                        .apply(images.clone(), Phase::Train { step })
                        .expect("shape");
                    step += 1;
                    std::hint::black_box(out);
                },
            ));

            let ad = device.clone().autodiff();
            let prompt = config.init(SIZE, &ad).expect("valid config");
            let images = images.clone().to_device(&ad);
            rows.push(measure(
                &format!("apply+backward {name}"),
                &backend,
                BATCH,
                &device,
                || {
                    let out = prompt
                        .apply(images.clone(), Phase::Train { step })
                        .expect("shape");
                    step += 1;
                    std::hint::black_box(out.sum().backward());
                },
            ));
        }
    }
    print_table(&rows);
}
