//! A backbone's convolutions one at a time, at batch 32: the forward pass, and the forward pass
//! plus the input gradient (what a prompt-training step runs through each frozen layer). It is the
//! profile that found burn-flex's depthwise input gradient to be where the Lite0 step lost to
//! PyTorch (docs/performance.md); `scripts/torch_conv_layers.py` times the same layers in PyTorch.
//! `VPROMPT_CONV_MODEL` picks the layer list: `efficientnet-lite0` (default) or `resnet18`.
//!
//! Each layer runs as the generated backbone runs it: through
//! `vprompt::backbone::kernels::conv2d::forward`, which on flex is the direct depthwise backward for
//! depthwise layers and the im2col + gemm forward for dense ones, and burn's `Conv2d::forward`
//! otherwise. (Before those kernels the depthwise rows were burn-flex's
//! transposed convolution: 3,300 ms summed with the gradient, against PyTorch's 2,122; ResNet-18's
//! 20 forward passes burn-flex's own: 1.22-1.26 s against PyTorch's 0.81.)
//!
//! Each row is one distinct layer shape (`×n` when Lite0 has it n times); the last rows add the
//! depthwise and the dense (mostly 1 x 1) layers up, weighted by count. Layers in isolation cost
//! more than inside the step (each call allocates its output and gradient afresh), so compare
//! rows with each other and with PyTorch's, not with the step time.
//!
//! Run: `cargo bench --bench conv_layers` (`VPROMPT_CONV_MODEL=resnet18` for ResNet-18's 20
//! convolutions, `VPROMPT_BENCH_SECONDS=1` for a quicker pass;
//! `--features wgpu` / `cuda` / `cpu` for other backends).

use std::time::Duration;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::Distribution;
use vprompt::backbone::kernels::conv2d::forward as run;
use vprompt::prelude::*;
use vprompt_examples::bench::{Measurement, env_usize, measure, print_table};
use vprompt_examples::bench_devices;

/// One convolution: input channels, output channels, kernel side, stride, padding (top, left,
/// bottom, right; `None` for none), groups, input side.
type Layer = (usize, usize, usize, usize, Option<[usize; 4]>, usize, usize);

/// Lite0's 49 convolutions in graph order, read off `crates/vprompt-backbone/src/generated/
/// efficientnet_lite0.rs` (the input side halves after each stride-2 layer, from 224).
#[rustfmt::skip]
const LITE0: [Layer; 49] = [
    (3, 32, 3, 2, Some([0, 0, 1, 1]), 1, 224),
    (32, 32, 3, 1, Some([1, 1, 1, 1]), 32, 112), (32, 16, 1, 1, None, 1, 112),
    (16, 96, 1, 1, None, 1, 112), (96, 96, 3, 2, Some([0, 0, 1, 1]), 96, 112), (96, 24, 1, 1, None, 1, 56),
    (24, 144, 1, 1, None, 1, 56), (144, 144, 3, 1, Some([1, 1, 1, 1]), 144, 56), (144, 24, 1, 1, None, 1, 56),
    (24, 144, 1, 1, None, 1, 56), (144, 144, 5, 2, Some([1, 1, 2, 2]), 144, 56), (144, 40, 1, 1, None, 1, 28),
    (40, 240, 1, 1, None, 1, 28), (240, 240, 5, 1, Some([2, 2, 2, 2]), 240, 28), (240, 40, 1, 1, None, 1, 28),
    (40, 240, 1, 1, None, 1, 28), (240, 240, 3, 2, Some([0, 0, 1, 1]), 240, 28), (240, 80, 1, 1, None, 1, 14),
    (80, 480, 1, 1, None, 1, 14), (480, 480, 3, 1, Some([1, 1, 1, 1]), 480, 14), (480, 80, 1, 1, None, 1, 14),
    (80, 480, 1, 1, None, 1, 14), (480, 480, 3, 1, Some([1, 1, 1, 1]), 480, 14), (480, 80, 1, 1, None, 1, 14),
    (80, 480, 1, 1, None, 1, 14), (480, 480, 5, 1, Some([2, 2, 2, 2]), 480, 14), (480, 112, 1, 1, None, 1, 14),
    (112, 672, 1, 1, None, 1, 14), (672, 672, 5, 1, Some([2, 2, 2, 2]), 672, 14), (672, 112, 1, 1, None, 1, 14),
    (112, 672, 1, 1, None, 1, 14), (672, 672, 5, 1, Some([2, 2, 2, 2]), 672, 14), (672, 112, 1, 1, None, 1, 14),
    (112, 672, 1, 1, None, 1, 14), (672, 672, 5, 2, Some([1, 1, 2, 2]), 672, 14), (672, 192, 1, 1, None, 1, 7),
    (192, 1152, 1, 1, None, 1, 7), (1152, 1152, 5, 1, Some([2, 2, 2, 2]), 1152, 7), (1152, 192, 1, 1, None, 1, 7),
    (192, 1152, 1, 1, None, 1, 7), (1152, 1152, 5, 1, Some([2, 2, 2, 2]), 1152, 7), (1152, 192, 1, 1, None, 1, 7),
    (192, 1152, 1, 1, None, 1, 7), (1152, 1152, 5, 1, Some([2, 2, 2, 2]), 1152, 7), (1152, 192, 1, 1, None, 1, 7),
    (192, 1152, 1, 1, None, 1, 7), (1152, 1152, 3, 1, Some([1, 1, 1, 1]), 1152, 7), (1152, 320, 1, 1, None, 1, 7),
    (320, 1280, 1, 1, None, 1, 7),
];

/// ResNet-18's 20 convolutions in graph order, read off `crates/vprompt-backbone/src/generated/
/// resnet18.rs` (batch norm is folded into them; the 3 x 3 max pool after the stem halves 112 to
/// 56; the 1 x 1 stride-2 ones are the downsampling shortcuts).
#[rustfmt::skip]
const RESNET18: [Layer; 20] = [
    (3, 64, 7, 2, Some([3, 3, 3, 3]), 1, 224),
    (64, 64, 3, 1, Some([1, 1, 1, 1]), 1, 56), (64, 64, 3, 1, Some([1, 1, 1, 1]), 1, 56),
    (64, 64, 3, 1, Some([1, 1, 1, 1]), 1, 56), (64, 64, 3, 1, Some([1, 1, 1, 1]), 1, 56),
    (64, 128, 3, 2, Some([1, 1, 1, 1]), 1, 56), (128, 128, 3, 1, Some([1, 1, 1, 1]), 1, 28),
    (64, 128, 1, 2, None, 1, 56),
    (128, 128, 3, 1, Some([1, 1, 1, 1]), 1, 28), (128, 128, 3, 1, Some([1, 1, 1, 1]), 1, 28),
    (128, 256, 3, 2, Some([1, 1, 1, 1]), 1, 28), (256, 256, 3, 1, Some([1, 1, 1, 1]), 1, 14),
    (128, 256, 1, 2, None, 1, 28),
    (256, 256, 3, 1, Some([1, 1, 1, 1]), 1, 14), (256, 256, 3, 1, Some([1, 1, 1, 1]), 1, 14),
    (256, 512, 3, 2, Some([1, 1, 1, 1]), 1, 14), (512, 512, 3, 1, Some([1, 1, 1, 1]), 1, 7),
    (256, 512, 1, 2, None, 1, 14),
    (512, 512, 3, 1, Some([1, 1, 1, 1]), 1, 7), (512, 512, 3, 1, Some([1, 1, 1, 1]), 1, 7),
];

fn main() {
    vprompt::tune_allocator(); // keep freed tensor memory for reuse (see its docs)
    let batch = env_usize("VPROMPT_BENCH_BATCH", 32);
    let model = std::env::var("VPROMPT_CONV_MODEL").unwrap_or_else(|_| "efficientnet-lite0".into());
    let layers: &[Layer] = match model.as_str() {
        "efficientnet-lite0" => &LITE0,
        "resnet18" => &RESNET18,
        other => {
            eprintln!("VPROMPT_CONV_MODEL={other}: expected efficientnet-lite0 or resnet18");
            std::process::exit(2);
        }
    };
    let mut distinct: Vec<(Layer, usize)> = Vec::new();
    for &layer in layers {
        match distinct.iter_mut().find(|(l, _)| *l == layer) {
            Some((_, count)) => *count += 1,
            None => distinct.push((layer, 1)),
        }
    }
    let mut rows = Vec::new();
    for (backend, device) in bench_devices().expect("a usable --device or VPROMPT_DEVICE") {
        let ad = device.clone().autodiff();
        // Summed median times, weighted by count: [depthwise, dense] x [forward, with gradient],
        // and how many of the model's layers each sum covers.
        let mut totals = [[Duration::ZERO; 2]; 2];
        let mut counted = [0; 2];
        for &((c_in, c_out, k, stride, pad, groups, side), count) in &distinct {
            let padding = pad.map_or(PaddingConfig2d::Valid, |[t, l, b, r]| {
                PaddingConfig2d::Explicit(t, l, b, r)
            });
            let conv = Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([stride, stride])
                .with_padding(padding)
                .with_groups(groups)
                .init(&device);
            let kind = if groups > 1 { "depthwise" } else { "dense" };
            let name = format!("{kind} {c_in}->{c_out} k{k} s{stride} at {side} px, x{count}");
            let x = Tensor::<4>::random([batch, c_in, side, side], Distribution::Default, &device);
            let forward = measure(&format!("{name}: forward"), &backend, batch, &device, || {
                let _ = run(&conv, x.clone()).sum().into_scalar::<f32>();
            });
            let x = Tensor::<4>::random([batch, c_in, side, side], Distribution::Default, &ad);
            let with_grad = measure(
                &format!("{name}: + input gradient"),
                &backend,
                batch,
                &device,
                || {
                    let x = x.clone().require_grad();
                    let grads = run(&conv, x.clone()).sum().backward();
                    let grad = x.grad(&grads).expect("the input is tracked");
                    let _ = grad.sum().into_scalar::<f32>();
                },
            );
            let slot = usize::from(groups == 1);
            totals[slot][0] += forward.median * count as u32;
            totals[slot][1] += with_grad.median * count as u32;
            counted[slot] += count;
            rows.extend([forward, with_grad]);
        }
        for (slot, kind) in ["depthwise", "dense"].into_iter().enumerate() {
            if counted[slot] == 0 {
                continue;
            }
            for (mode, label) in ["forward", "+ input gradient"].into_iter().enumerate() {
                let total = totals[slot][mode];
                rows.push(Measurement {
                    name: format!("all {} {kind} layers: {label}", counted[slot]),
                    backend: backend.clone(),
                    images_per_call: batch,
                    iterations: 1,
                    median: total,
                    min: total,
                    max: total,
                    peak_rss_mib: None,
                });
            }
        }
    }
    print_table(&rows);
}
