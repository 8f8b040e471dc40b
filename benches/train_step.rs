//! A visual-prompting training step (forward, backward to the prompt, SGD update) on the frozen,
//! embedded EfficientNet-Lite0 at batch 32, 224 x 224, with the paper's padding prompt (p = 30) and
//! optimiser, on every compiled backend. The backbone lives on the plain device, the prompt on the
//! autodiff device, as in `Trainer`. Also: the same step with the backbone on the autodiff device
//! (frozen), to show what keeping it off the tape is worth.
//!
//! Run: `cargo bench --bench train_step` (`--features wgpu` / `cuda` / `cpu` for other backends).

use burn::tensor::Distribution;
use vprompt::prelude::*;
use vprompt::train::{PromptOptimizer, train_step};
use vprompt_examples::bench::{measure, print_table};
use vprompt_examples::compiled_devices;

const BATCH: usize = 32;

fn main() -> vprompt::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let mut rows = Vec::new();
    for (backend, device) in compiled_devices() {
        let ad = device.clone().autodiff();
        for (name, weights_device) in [
            ("weights on plain device", &device),
            ("weights on autodiff device", &ad),
        ] {
            let backbone = ImageBackbone::efficientnet_lite0(weights_device)?;
            let mapping = LabelMappingConfig::FirstN.init(1000, 10, &device)?;
            let prompt = PaddingPromptConfig::new(30).init([224, 224], &ad)?.into();
            let mut model = PromptedClassifier::new(prompt, backbone, mapping)?;
            let mut optimizer = PromptOptimizer::new(&TrainingConfig::paper().optimizer);
            let images = Tensor::<4>::random([BATCH, 3, 224, 224], Distribution::Default, &ad);
            let labels = Tensor::<1, Int>::from_data(
                TensorData::new((0..BATCH as i64).map(|i| i % 10).collect::<Vec<_>>(), [BATCH]),
                &ad,
            );
            let mut step = 0;
            rows.push(measure(
                &format!("train step lite0, {name}"),
                backend,
                BATCH,
                &device,
                || {
                    train_step(
                        &mut model,
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
    print_table(&rows);
    Ok(())
}
