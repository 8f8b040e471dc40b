//! Convolutions with faster kernels on `flex`: the input gradient of depthwise convolutions
//! (`groups == channels_in == channels_out`) and the forward pass of dense ones (`groups == 1`).
//!
//! **Depthwise, backward.** Measured one layer at a time (`cargo bench --bench conv_layers`),
//! burn-flex took 2.47 s for the input gradients of Lite0's 16 depthwise layers at batch 32
//! against PyTorch's 1.27 s, while every forward pass and every dense layer was at or ahead of
//! PyTorch: burn runs the gradient as a grouped transposed convolution, one single-column gemm plus
//! a scalar col2im per (image, channel), almost all overhead for one channel. Here the backward
//! scatters each output-gradient row into the input rows it was read from (`input_grad_f32`): a
//! plane stays in cache, stride-1 rows are contiguous `axpy`s, and there is no im2col, gemm or
//! col2im. The forward pass is burn-flex's.
//!
//! **Dense.** On ResNet-18 it was the other way round: burn-flex's forward passes took 1.5x
//! PyTorch's while the input gradients were at parity. The forward is [`super::dense`]'s im2col +
//! one gemm per image. The input gradient is [`super::dense`]'s too, one gemm per image and a
//! col2im whose stride-1 rows are contiguous additions; burn-flex's transposed convolution adds
//! one value at a time with index arithmetic per element (10 % of ResNet-18's step).
//!
//! In both, the weight and bias gradients, only needed when the backbone is not frozen, stay
//! burn-flex's. On every other device and for layers the kernels do not cover (`Same` padding, no
//! bias, not `f32`, grouped but not depthwise, asymmetric padding on a dense layer), [`forward`] is
//! exactly [`Conv2d::forward`].

#[cfg(feature = "flex")]
use super::Geometry;
#[cfg(feature = "flex")]
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

/// Runs `conv` on `input` (`[batch, channels, height, width]`), through the kernels where they
/// apply (see the module docs), else through [`Conv2d::forward`]. The values are the same either
/// way (up to float rounding order); only the speed differs.
pub fn forward(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(options) = flex::options(conv, &input) {
        return flex::forward(conv, input, options);
    }
    conv.forward(input)
}

#[cfg(feature = "flex")]
/// The input gradient of a depthwise convolution:
/// `grad_in[n, c, oy*sy + ky*dy - py, ox*sx + kx*dx - px] += grad_out[n, c, oy, ox] * weight[c, ky, kx]`
/// over every output position and kernel tap that lands inside the input.
///
/// `grad_out` is `[batch, channels, out_h, out_w]`, `weight` `[channels, 1, k_h, k_w]`, both
/// contiguous; the result is `[batch, channels, in_h, in_w]`. Planes are independent and run in
/// parallel.
pub(crate) fn input_grad_f32(grad_out: &[f32], weight: &[f32], geometry: &Geometry) -> Vec<f32> {
    use rayon::prelude::*;
    let [in_h, in_w] = geometry.input;
    let [out_h, out_w] = geometry.output;
    let [k_h, k_w] = geometry.kernel;
    let (in_plane, out_plane, taps) = (in_h * in_w, out_h * out_w, k_h * k_w);
    debug_assert_eq!(grad_out.len(), geometry.batch * geometry.channels_in * out_plane);
    debug_assert_eq!(weight.len(), geometry.channels_in * taps);
    let mut grad_in = vec![0f32; geometry.batch * geometry.channels_in * in_plane];
    if in_plane == 0 || out_plane == 0 {
        return grad_in;
    }
    grad_in
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .enumerate()
        .for_each_init(Vec::new, |row, (plane, (grad_in, grad_out))| {
            let channel = plane % geometry.channels_in;
            let weight = &weight[channel * taps..(channel + 1) * taps];
            scatter_plane(grad_out, weight, geometry, grad_in, row);
        });
    grad_in
}

#[cfg(feature = "flex")]
/// One (image, channel) plane of [`input_grad_f32`], one input row at a time: each kernel row
/// that read this input row adds its weighted output-gradient row in.
///
/// Horizontally a tap writes every `s_x`-th input column, so for `s_x > 1` the row is built in
/// `row`, split by column phase (`ix % s_x`), where each tap's writes are contiguous and the inner
/// loop vectorises, and then interleaved into the input row. For `s_x == 1` the taps add straight
/// into the input row.
#[inline(never)] // a frame of its own in profiles
fn scatter_plane(
    grad_out: &[f32],
    weight: &[f32],
    geometry: &Geometry,
    grad_in: &mut [f32],
    row: &mut Vec<f32>,
) {
    let [in_h, in_w] = geometry.input;
    let [out_h, out_w] = geometry.output;
    let [k_h, k_w] = geometry.kernel;
    let [s_y, s_x] = geometry.stride;
    let [d_y, d_x] = geometry.dilation;
    let [p_y, p_x] = geometry.pad_begin;
    // Per horizontal tap, writing input column `ix = ox*s_x + kx*d_x - p_x`: its phase `ix % s_x`,
    // the index within the phase of its first write, and the output columns `first..end` that
    // land inside the input ([`super::reach`]).
    let phase_len = in_w.div_ceil(s_x);
    let columns: Vec<(usize, usize, usize, usize)> = (0..k_w)
        .map(|kx| {
            let (outputs, ix) = super::reach(in_w, p_x, kx * d_x, s_x, out_w);
            (ix % s_x, ix / s_x, outputs.start, outputs.end)
        })
        .collect();
    if s_x > 1 {
        row.resize(s_x * phase_len, 0.0);
    }
    for iy in 0..in_h {
        let in_row = &mut grad_in[iy * in_w..(iy + 1) * in_w];
        let target: &mut [f32] = if s_x == 1 {
            in_row
        } else {
            row.fill(0.0);
            row.as_mut_slice()
        };
        for ky in 0..k_h {
            // The output row that read input row `iy` through kernel row `ky`, if any.
            let Some(reach) = (iy + p_y).checked_sub(ky * d_y) else {
                continue;
            };
            if reach % s_y != 0 || reach / s_y >= out_h {
                continue;
            }
            let oy = reach / s_y;
            let out_row = &grad_out[oy * out_w..(oy + 1) * out_w];
            for (kx, &(phase, start, first, end)) in columns.iter().enumerate() {
                if first == end {
                    continue; // this tap only ever reads padding
                }
                let w = weight[ky * k_w + kx];
                let source = &out_row[first..end];
                let base = phase * phase_len + start;
                for (t, &g) in target[base..base + source.len()].iter_mut().zip(source) {
                    *t += w * g;
                }
            }
        }
        if s_x > 1 {
            let in_row = &mut grad_in[iy * in_w..(iy + 1) * in_w];
            for (ix, value) in in_row.iter_mut().enumerate() {
                *value = row[(ix % s_x) * phase_len + ix / s_x];
            }
        }
    }
}

#[cfg(feature = "flex")]
/// Where the output sits: `(begin, end)` padding pairs for an explicit or valid padding, `None`
/// for `Same` (which depends on the input size and is left to [`Conv2d::forward`]).
fn padding_pairs(padding: &PaddingConfig2d) -> Option<[(usize, usize); 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([(0, 0), (0, 0)]),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([(top, bottom), (left, right)]),
        PaddingConfig2d::Same => None,
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: forward through [`dense_forward`] or burn-flex, backward through
    //! [`input_grad_f32`] or burn-flex.
    use super::{Geometry, input_grad_f32, padding_pairs};
    use crate::dense;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::ops::conv::calculate_conv_output_size;
    use burn::backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
    use burn::nn::conv::Conv2d;
    use burn::tensor::{Shape, Tensor, TensorData};

    /// A depthwise or dense convolution with a bias, as one differentiable operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait KernelConvBackend: Backend {
        /// `x` `[batch, c_in, h, w]`, `weight` `[c_out, c_in / groups, k_h, k_w]`, `bias`
        /// `[c_out]`, with `options.groups` either 1 (dense, symmetric padding) or `c_in ==
        /// c_out` (depthwise); returns `[batch, c_out, out_h, out_w]`.
        fn kernel_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self>;
    }

    impl KernelConvBackend for Flex {
        fn kernel_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            if options.groups == 1 {
                dense_forward(x, weight, bias, &options)
            } else {
                Flex::conv2d(x, weight, Some(bias), options)
            }
        }
    }

    /// A dense convolution through [`dense::forward_f32`] (only `f32` reaches this op:
    /// [`options`]).
    fn dense_forward(
        x: FloatTensor<Flex>,
        weight: FloatTensor<Flex>,
        bias: FloatTensor<Flex>,
        options: &ConvOptions<2>,
    ) -> FloatTensor<Flex> {
        let x_dims = x.shape().dims::<4>();
        let weight_dims = weight.shape().dims::<4>();
        let pad = options.padding_begin();
        let [out_h, out_w] = [0, 1].map(|a| {
            let (kernel, input) = (weight_dims[2 + a], x_dims[2 + a]);
            calculate_conv_output_size(kernel, options.stride[a], pad[a], options.dilation[a], input)
        });
        let out_dims = [x_dims[0], weight_dims[0], out_h, out_w];
        let geometry = geometry(x_dims, weight_dims, out_dims, options);
        let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
        let values = dense::forward_f32(
            x.as_slice::<f32>().expect("options() admits f32 only"),
            weight.as_slice::<f32>().expect("options() admits f32 only"),
            Some(bias.as_slice::<f32>().expect("options() admits f32 only")),
            &geometry,
        );
        FloatTensor::<Flex>::from_data(TensorData::new(values, out_dims))
    }

    /// The kernels' view of a convolution of `x_dims` by `weight_dims` (`[c_out, c_in / groups,
    /// k_h, k_w]`) into `out_dims`.
    fn geometry(
        x_dims: [usize; 4],
        weight_dims: [usize; 4],
        out_dims: [usize; 4],
        options: &ConvOptions<2>,
    ) -> Geometry {
        Geometry {
            batch: x_dims[0],
            channels_in: x_dims[1],
            channels_out: weight_dims[0],
            input: [x_dims[2], x_dims[3]],
            output: [out_dims[2], out_dims[3]],
            kernel: [weight_dims[2], weight_dims[3]],
            stride: options.stride,
            dilation: options.dilation,
            pad_begin: options.padding_begin(),
        }
    }

    /// The input gradient, `[batch, c_in, in_h, in_w]`, from the output gradient `grad`: through
    /// [`dense::input_grad_f32`] for a dense layer, [`input_grad_f32`] for a depthwise one (only
    /// `f32` reaches this op).
    fn input_grad(
        grad: FloatTensor<Flex>,
        weight: FloatTensor<Flex>,
        options: &ConvOptions<2>,
        x_dims: [usize; 4],
    ) -> FloatTensor<Flex> {
        let out_dims = grad.shape().dims::<4>();
        let weight_dims = weight.shape().dims::<4>();
        let geometry = geometry(x_dims, weight_dims, out_dims, options);
        let (grad, weight) = (grad.to_contiguous(), weight.to_contiguous());
        let grad = grad.as_slice::<f32>().expect("options() admits f32 only");
        let weight = weight.as_slice::<f32>().expect("options() admits f32 only");
        let values = if options.groups == 1 {
            dense::input_grad_f32(grad, weight, &geometry)
        } else {
            input_grad_f32(grad, weight, &geometry)
        };
        FloatTensor::<Flex>::from_data(TensorData::new(values, x_dims))
    }

    /// What the backward pass keeps: the input only when the weight needs a gradient (never for a
    /// frozen backbone), the weight, the options and the input's dims.
    type State = (
        Option<FloatTensor<Flex>>,
        FloatTensor<Flex>,
        ConvOptions<2>,
        [usize; 4],
    );

    #[derive(Debug)]
    struct KernelConvBackward;

    impl Backward<Flex, 3> for KernelConvBackward {
        type State = State;

        fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x, weight, options, x_dims) = ops.state;
            if let Some(node) = node_weight {
                let x = x.expect("the input is kept when the weight is tracked");
                let g = Flex::conv2d_weight_backward(x, weight.clone(), grad.clone(), options.clone());
                grads.register::<Flex>(node.id, g);
            }
            if let Some(node) = node_bias {
                let channels = grad.shape().dims::<4>()[1]; // c_out
                let g = Flex::float_sum_dim(Flex::float_sum_dim(Flex::float_sum_dim(grad.clone(), 0), 2), 3);
                grads.register::<Flex>(node.id, Flex::float_reshape(g, Shape::new([channels])));
            }
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, input_grad(grad, weight, &options, x_dims));
            }
        }
    }

    impl<C: CheckpointStrategy> KernelConvBackend for Autodiff<Flex, C> {
        fn kernel_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            let keep_x = weight.is_tracked();
            let x_dims = x.primitive().shape().dims::<4>();
            match KernelConvBackward
                .prepare::<C>([x.node(), weight.node(), bias.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (x, weight, bias) =
                        (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
                    let kept = keep_x.then(|| x.clone());
                    let output = Flex::kernel_conv2d(x, weight.clone(), bias, options.clone());
                    prep.finish((kept, weight, options, x_dims), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::kernel_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    options,
                )),
            }
        }
    }

    /// The options for `conv` on `input` when a kernel applies: a `flex` device (with or without
    /// autodiff), `f32`, a layer with a bias and explicit or valid padding that is either a
    /// canonical depthwise layer or a dense one with the same padding before and after. `None`
    /// sends the call to [`Conv2d::forward`].
    pub(super) fn options(conv: &Conv2d, input: &Tensor<4>) -> Option<ConvOptions<2>> {
        let [_, channels, _, _] = input.dims();
        let [out_channels, per_group, _, _] = conv.weight.dims();
        let depthwise =
            conv.groups > 1 && conv.groups == channels && out_channels == channels && per_group == 1;
        let dense = conv.groups == 1 && per_group == channels;
        if !(depthwise || dense) || conv.bias.is_none() || !crate::on_flex_f32(input) {
            return None;
        }
        let padding = padding_pairs(&conv.padding)?;
        if dense && padding.iter().any(|(begin, end)| begin != end) {
            return None;
        }
        Some(ConvOptions::new_with_padding(
            conv.stride,
            padding,
            conv.dilation,
            conv.groups,
        ))
    }

    /// [`super::forward`] through the kernels; `options` comes from [`options`].
    pub(super) fn forward(conv: &Conv2d, input: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        let bias = conv.bias.as_ref().expect("options() checked the bias").val();
        let output = <Dispatch as KernelConvBackend>::kernel_conv2d(
            input.into_dispatch(),
            conv.weight.val().into_dispatch(),
            bias.into_dispatch(),
            options,
        );
        Tensor::from_dispatch(output)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::test_values::{naive_input_grad, out_size, values};
    use burn::module::Module;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn direct_input_gradient_equals_the_definition() {
        // (input, kernel, stride, dilation, padding (begin, end) per axis)
        let cases = [
            ([9, 9], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
            ([10, 11], [3, 3], [2, 2], [1, 1], [(0, 1), (0, 1)]), // Lite0's stride-2 3x3
            ([11, 10], [5, 5], [2, 2], [1, 1], [(1, 2), (1, 2)]), // Lite0's stride-2 5x5
            ([7, 7], [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)]),
            ([9, 8], [3, 2], [3, 1], [2, 1], [(2, 0), (0, 1)]),
            ([4, 4], [3, 3], [1, 2], [1, 1], [(0, 0), (0, 0)]),
            ([3, 3], [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)]), // kernel wider than the input
            ([3, 2], [3, 5], [1, 2], [1, 1], [(1, 1), (2, 3)]), // taps that only read padding
            ([6, 9], [3, 3], [2, 3], [2, 2], [(2, 1), (1, 2)]), // stride 3, dilation 2
        ];
        for (input, kernel, stride, dilation, padding) in cases {
            let output = [0, 1].map(|a| out_size(input[a], kernel[a], stride[a], dilation[a], padding[a]));
            let g = Geometry {
                batch: 2,
                channels_in: 3,
                channels_out: 3,
                input,
                output,
                kernel,
                stride,
                dilation,
                pad_begin: [padding[0].0, padding[1].0],
            };
            let grad_out = values(2 * 3 * output[0] * output[1], 1);
            let weight = values(3 * kernel[0] * kernel[1], 2);
            let direct = input_grad_f32(&grad_out, &weight, &g);
            let naive = naive_input_grad(&grad_out, &weight, &g, g.channels_in);
            assert_eq!(direct.len(), naive.len());
            for (i, (a, b)) in direct.iter().zip(&naive).enumerate() {
                assert!((a - b).abs() <= 1e-5, "{g:?}: element {i}: {a} vs {b}");
            }
        }
    }

    /// A convolution with deterministic weights and bias.
    fn conv_layer(
        [c_in, c_out]: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
        groups: usize,
        device: &burn::tensor::Device,
    ) -> Conv2d {
        let mut conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(padding)
            .with_groups(groups)
            .with_bias(true)
            .init(device);
        let shape = [c_out, c_in / groups, kernel, kernel];
        conv.weight = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(values(shape.iter().product(), 3), shape),
            device,
        ));
        conv.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(values(c_out, 4), [c_out]),
            device,
        )));
        conv
    }

    /// A depthwise convolution with deterministic weights and bias.
    fn depthwise_conv(
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
        device: &burn::tensor::Device,
    ) -> Conv2d {
        conv_layer([channels, channels], kernel, stride, padding, channels, device)
    }

    fn assert_same(a: Tensor<4>, b: Tensor<4>, what: &str) {
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{what}: max difference {worst}");
    }

    /// On flex with autodiff the rerouted layer gives burn's values and input gradient, and with a
    /// trainable weight and bias their gradients too: depthwise layers (the direct backward) and
    /// dense ones (the im2col forward).
    #[test]
    fn rerouted_layer_matches_burns_convolution_and_gradients() {
        let device = burn::tensor::Device::flex().autodiff();
        for (channels, kernel, stride, padding, groups) in [
            ([6, 6], 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 6),
            ([6, 6], 3, 2, PaddingConfig2d::Explicit(0, 0, 1, 1), 6),
            ([6, 6], 5, 2, PaddingConfig2d::Explicit(1, 1, 2, 2), 6),
            ([6, 6], 3, 1, PaddingConfig2d::Valid, 6),
            ([6, 5], 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 1), // ResNet's 3x3
            ([6, 8], 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 1), // its stride-2 3x3
            ([6, 8], 1, 2, PaddingConfig2d::Valid, 1),                // its shortcut
            ([6, 4], 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 1), // its stem
            ([6, 7], 1, 1, PaddingConfig2d::Valid, 1),                // pointwise
            ([6, 3], 2, 3, PaddingConfig2d::Valid, 1),                // stride past the kernel
        ] {
            let conv = conv_layer(channels, kernel, stride, padding.clone(), groups, &device);
            assert!(flex::options(&conv, &Tensor::zeros([1, 6, 13, 13], &device)).is_some());
            let x = Tensor::<4>::random([2, 6, 13, 13], Distribution::Uniform(-1.0, 1.0), &device);
            let upstream =
                Tensor::<4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &device);
            let run = |direct: bool| {
                let x = x.clone().detach().require_grad();
                let y = if direct {
                    forward(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let x_grad = x.grad(&grads).unwrap();
                let w_grad = conv.weight.val().grad(&grads).unwrap();
                let b_grad = conv.bias.as_ref().unwrap().val().grad(&grads).unwrap();
                (y.inner(), x_grad, w_grad, b_grad)
            };
            let (y, x_grad, w_grad, b_grad) = run(true);
            let (y_ref, x_grad_ref, w_grad_ref, b_grad_ref) = run(false);
            let what =
                format!("{channels:?}, kernel {kernel}, stride {stride}, {padding:?}, groups {groups}");
            assert_same(y, y_ref, &format!("{what}: output"));
            assert_same(x_grad, x_grad_ref, &format!("{what}: input gradient"));
            assert_same(w_grad, w_grad_ref, &format!("{what}: weight gradient"));
            assert_eq!(b_grad.dims(), b_grad_ref.dims());
            assert_same(
                b_grad.reshape([1, 1, 1, channels[1]]),
                b_grad_ref.reshape([1, 1, 1, channels[1]]),
                &format!("{what}: bias gradient"),
            );
        }
    }

    /// The gradient of `conv.forward(x).sum()` with respect to `x`, through burn's own ops.
    fn burns_input_grad(conv: &Conv2d, x: &Tensor<4>) -> Tensor<4> {
        let x = x.clone().detach().require_grad();
        let grads = conv.forward(x.clone()).sum().backward();
        x.grad(&grads).unwrap()
    }

    /// A frozen layer (no weight gradient wanted) still passes the input gradient, and layers the
    /// direct path does not cover go to `Conv2d::forward`.
    #[test]
    fn frozen_layers_and_uncovered_shapes() {
        let device = burn::tensor::Device::flex().autodiff();
        let conv = depthwise_conv(4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), &device).no_grad();
        let x = Tensor::<4>::random([1, 4, 8, 8], Distribution::Default, &device).require_grad();
        let grads = forward(&conv, x.clone()).sum().backward();
        let reference = burns_input_grad(&conv, &x);
        assert_same(
            x.grad(&grads).unwrap(),
            reference.clone(),
            "frozen layer: input gradient",
        );
        assert!(conv.weight.val().grad(&grads).is_none());

        // A trainable bias on a frozen weight: the bias gradient does not need the saved input.
        let mut bias_only = depthwise_conv(4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), &device);
        bias_only.weight = bias_only.weight.set_require_grad(false);
        let grads = forward(&bias_only, x.clone()).sum().backward();
        let bias_grad = bias_only.bias.as_ref().unwrap().val().grad(&grads).unwrap();
        // d(sum of the [1, 4, 8, 8] output)/d(bias[c]) = 8 * 8 positions.
        assert_eq!(bias_grad.into_data().try_to_vec::<f32>().unwrap(), vec![64.0; 4]);
        assert!(bias_only.weight.val().grad(&grads).is_none());

        // How `Trainer` runs a backbone: weights on the plain device, the input on the autodiff one.
        let plain = depthwise_conv(
            4,
            3,
            1,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            &burn::tensor::Device::flex(),
        );
        let grads = forward(&plain, x.clone()).sum().backward();
        assert_same(
            x.grad(&grads).unwrap(),
            reference,
            "weights on the plain device: input gradient",
        );

        let input = Tensor::<4>::zeros([1, 4, 8, 8], &device);
        let same = depthwise_conv(4, 3, 1, PaddingConfig2d::Same, &device);
        assert!(flex::options(&same, &input).is_none(), "Same padding");
        let mut no_bias = depthwise_conv(4, 3, 1, PaddingConfig2d::Valid, &device);
        no_bias.bias = None;
        assert!(flex::options(&no_bias, &input).is_none(), "no bias");
        let grouped = conv_layer([4, 4], 3, 1, PaddingConfig2d::Valid, 2, &device);
        assert!(
            flex::options(&grouped, &input).is_none(),
            "grouped, not depthwise"
        );
        let asymmetric = conv_layer([4, 4], 3, 2, PaddingConfig2d::Explicit(0, 0, 1, 1), 1, &device);
        assert!(
            flex::options(&asymmetric, &input).is_none(),
            "dense, asymmetric padding"
        );
        for conv in [grouped, asymmetric] {
            assert_same(
                forward(&conv, input.clone()),
                conv.forward(input.clone()),
                "uncovered layers pass through",
            );
        }

        // A frozen dense layer on the plain device: the im2col forward, burn's input gradient.
        let dense = conv_layer(
            [4, 6],
            3,
            1,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            1,
            &burn::tensor::Device::flex(),
        );
        let grads = forward(&dense, x.clone()).sum().backward();
        let reference = burns_input_grad(&dense, &x);
        assert_same(
            x.grad(&grads).unwrap(),
            reference,
            "frozen dense layer: input gradient",
        );
    }
}
