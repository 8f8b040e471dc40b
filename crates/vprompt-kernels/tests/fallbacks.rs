//! The kernels' layers on every compiled device, for values: forward, and the input gradient of
//! `sum(output * upstream)`, against PyTorch in float64 (`tests/reference/make_kernel_reference.py`).
//! On flex the calls run vprompt's kernels; on wgpu, cuda and cpu they are Burn's own operations,
//! which this file is the value check of (the kernels' unit tests compare the two on flex).

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use vprompt_kernels::{conv2d, max_pool2d, relu6};
use vprompt_testkit::{assert_close, device_tests, npy, to_vec};

fn reference(name: &str) -> npy::NpyArray {
    npy::read(format!(
        "{}/tests/reference/kernel_{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn tensor<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let array = reference(name);
    let shape: [usize; D] = array.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(array.to_f32(), shape), device)
}

/// Checks `layer`'s output and input gradient on `device`, with the weights on the plain device
/// and the input on the autodiff one (how `Trainer` runs a frozen backbone), each value within
/// 1e-5 (absolute and relative).
fn check(name: &str, device: &Device, layer: impl Fn(Tensor<4>) -> Tensor<4>) {
    check_within(name, device, layer, 0.0);
}

/// [`check`], the absolute tolerance raised to `of_largest` times the largest value expected:
/// for Winograd's convolutions on flex, whose rounding error scales with the layer's values
/// rather than each output's (`kernels::winograd`). Measured here: F(4 x 4) (`wide3`) within
/// 3.4e-6 of the largest value, F(2 x 2) (`wide3small`) 3.1e-7, the direct sums 1.9e-7.
fn check_within(name: &str, device: &Device, layer: impl Fn(Tensor<4>) -> Tensor<4>, of_largest: f32) {
    let ad = device.clone().autodiff();
    let x = tensor::<4>(&format!("{name}_x"), &ad).require_grad();
    let y = layer(x.clone());
    let upstream = tensor::<4>(&format!("{name}_up"), &ad);
    let grads = (y.clone() * upstream).sum().backward();
    let expected_y = reference(&format!("{name}_y"));
    assert_eq!(y.dims().to_vec(), expected_y.shape, "{name}: output shape");
    let expected_dx = reference(&format!("{name}_dx")).to_f32();
    let dx = to_vec(x.grad(&grads).expect("input gradient"));
    for (actual, expected) in [(to_vec(y), expected_y.to_f32()), (dx, expected_dx)] {
        let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&actual, &expected, 1e-5f32.max(of_largest * largest), 1e-5);
    }
}

fn conv(
    name: &str,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let weight = tensor::<4>(&format!("{name}_w"), device);
    let [c_out, c_in_per_group, kernel, _] = weight.dims();
    let mut conv = Conv2dConfig::new([c_in_per_group * groups, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
        .with_dilation([dilation, dilation])
        .with_groups(groups)
        .init(device);
    conv.weight = Param::from_tensor(weight).set_require_grad(false);
    conv.bias = Some(Param::from_tensor(tensor::<1>(&format!("{name}_b"), device)).set_require_grad(false));
    conv
}

/// EfficientNet-Lite0's depthwise 3x3, stride 2.
fn depthwise_convolution(device: &Device) {
    let layer = conv("depthwise", 2, 1, 1, 8, device);
    check("depthwise", device, |x| conv2d::forward(&layer, x));
}

/// ResNets' dense convolutions: 3x3 (narrow; wide, which flex runs through Winograd at 13 x 14
/// and 7 x 7 px), and the strided 1x1 of the downsampling shortcut.
fn dense_convolutions(device: &Device) {
    for (name, stride, padding) in [("dense3", 1, 1), ("dense1s2", 2, 0)] {
        let layer = conv(name, stride, padding, 1, 1, device);
        check(name, device, |x| conv2d::forward(&layer, x));
    }
    for name in ["wide3", "wide3small"] {
        let layer = conv(name, 1, 1, 1, 1, device);
        check_within(name, device, |x| conv2d::forward(&layer, x), 1e-5);
    }
}

/// ResNets' stem pooling: 3x3, stride 2, padding 1.
fn max_pooling(device: &Device) {
    let pool = MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init();
    check("maxpool", device, |x| max_pool2d(&pool, x));
}

fn relu6_clamps(device: &Device) {
    check("relu6", device, relu6);
}

device_tests!(
    depthwise_convolution,
    dense_convolutions,
    max_pooling,
    relu6_clamps
);
