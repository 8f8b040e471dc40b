//! Frozen EfficientNet-Lite0 at batch 32, 224 x 224, on every compiled backend: forward only, and
//! forward + backward to the input (the backbone's share of a prompt-training step). The weights
//! live on the plain device; only the input is on the autodiff device, as in training.
//!
//! Run: `cargo bench --bench backbone` (`--features wgpu` / `cuda` / `cpu` for other backends).

use burn::tensor::Distribution;
use vprompt::prelude::*;
use vprompt_examples::bench::{measure, print_table};
use vprompt_examples::bench_devices;

const BATCH: usize = 32;

fn main() -> vprompt::Result<()> {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let mut rows = Vec::new();
    for (backend, device) in bench_devices()? {
        let backbone = ImageBackbone::efficientnet_lite0(&device)?;
        let x = Tensor::<4>::random([BATCH, 3, 224, 224], Distribution::Default, &device);
        rows.push(measure(
            "efficientnet-lite0 forward",
            &backend,
            BATCH,
            &device,
            || {
                std::hint::black_box(backbone.forward_normalized(x.clone()).expect("shape"));
            },
        ));
        let ad = device.clone().autodiff();
        let x_ad = Tensor::<4>::from_data(x.clone().into_data(), &ad).require_grad();
        rows.push(measure(
            "efficientnet-lite0 forward+backward to input",
            &backend,
            BATCH,
            &device,
            || {
                let logits = backbone.forward_normalized(x_ad.clone()).expect("shape");
                let grads = logits.slice([0..BATCH, 0..10]).sum().backward();
                std::hint::black_box(x_ad.grad(&grads));
            },
        ));
    }
    print_table(&rows);
    Ok(())
}
