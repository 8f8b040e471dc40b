//! A visual-prompting training step (forward, backward to the prompt, SGD update) on a frozen
//! backbone (224 x 224 by default) with the paper's padding prompt (p = 30) and optimiser, on every compiled
//! backend. The backbone lives on the plain device, the prompt on the autodiff device, as in
//! `Trainer`. For EfficientNet-Lite0 also: the same step with the backbone on the autodiff device
//! (frozen), to show what keeping it off the tape is worth.
//!
//! Models (`VPROMPT_BENCH_MODELS`, comma-separated, default `efficientnet-lite0,resnet18`): any
//! image preset name. Lite0 has its embedded ImageNet weights; the others get seeded random
//! weights (the step costs the same). `resnet18` is the ResNet-18-size fixture (compare it with
//! PyTorch's torchvision `resnet18`); `resnet50` and `clip-vit-b32-image` (the CLIP
//! ViT-B/32-size model) are the larger ones.
//!
//! Batch size: `VPROMPT_BENCH_BATCH` (default 32). Image side: `VPROMPT_BENCH_SIZE` (default 224;
//! other sizes only for the convolutional presets, through `ImageBackbone::with_input_size`).
//! Peak memory is the process's, so for a scaling table run one process per point:
//! `scripts/bench-scaling.sh`.
//!
//! Run: `cargo bench --bench train_step` (`--features wgpu` / `cuda` / `cpu` for other backends).

use burn::tensor::Distribution;
use vprompt::prelude::*;
use vprompt::train::{PromptOptimizer, train_step};
use vprompt_examples::bench::{env_usize, measure, print_table};
use vprompt_examples::bench_devices;

fn main() -> vprompt::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let batch = env_usize("VPROMPT_BENCH_BATCH", 32);
    let side = env_usize("VPROMPT_BENCH_SIZE", 224);
    let models =
        std::env::var("VPROMPT_BENCH_MODELS").unwrap_or_else(|_| "efficientnet-lite0,resnet18".into());
    let mut rows = Vec::new();
    for (backend, device) in bench_devices()? {
        let ad = device.clone().autodiff();
        for model in models.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let preset = Preset::from_name(model)?;
            let mut cases = vec![("weights on plain device", device.clone())];
            if preset == Preset::EfficientNetLite0 {
                cases.push(("weights on autodiff device", ad.clone()));
            }
            for (placement, weights_device) in cases {
                let backbone = if preset == Preset::EfficientNetLite0 {
                    ImageBackbone::efficientnet_lite0(&weights_device)?
                } else {
                    ImageBackbone::with_random_weights(preset, 0, 0.02, &weights_device)?
                }
                .with_input_size([side, side])?;
                let mapping = LabelMappingConfig::FirstN.init(backbone.output_dim(), 10, &device)?;
                let prompt = PaddingPromptConfig::new(30)
                    .init(backbone.input_size(), &ad)?
                    .into();
                let mut classifier = PromptedClassifier::new(prompt, backbone, mapping)?;
                let mut optimizer = PromptOptimizer::new(&TrainingConfig::paper().optimizer);
                let images = Tensor::<4>::random([batch, 3, side, side], Distribution::Default, &ad);
                let labels = Tensor::<1, Int>::from_data(
                    TensorData::new((0..batch as i64).map(|i| i % 10).collect::<Vec<_>>(), [batch]),
                    &ad,
                );
                let mut step = 0;
                rows.push(measure(
                    &format!("train step {model}, batch {batch}, {side} px, {placement}"),
                    &backend,
                    batch,
                    &device,
                    || {
                        train_step(
                            &mut classifier,
                            &mut optimizer,
                            images.clone(),
                            labels.clone(),
                            1.0,
                            step,
                        )
                        .expect("finite loss");
                        step += 1;
                    },
                ));
            }
        }
    }
    print_table(&rows);
    Ok(())
}
