//! 2-d max pooling as one differentiable operation on `flex`.
//!
//! burn-flex's max pooling with indices (what autodiff runs whenever the input carries a gradient,
//! as it always does in visual prompting) recomputes each window's valid range with integer
//! divisions for every output value and writes 64-bit indices: ResNet-18's single 3 x 3 pool on
//! `[32, 64, 112, 112]` was 6.4 % of the training step's profile. Here the valid window ranges are
//! computed once per output row and column, indices are 32-bit positions in the input plane, and
//! planes run in parallel ([`forward_f32`]); the backward pass adds each output gradient at its
//! index ([`backward_f32`]).

use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

/// Runs `pool` on `input` (`[batch, channels, height, width]`): through [`forward_f32`] on a
/// `flex` device in `f32` with valid or symmetric explicit padding and `ceil_mode` off, else
/// through [`MaxPool2d::forward`]. The values are the same either way, and so is the gradient:
/// to the first maximum of each window, or to its last NaN (burn-flex's and PyTorch's rule).
pub fn max_pool2d(pool: &MaxPool2d, input: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(geometry) = geometry(pool, &input) {
        return flex::max_pool2d(input, geometry);
    }
    pool.forward(input)
}

/// Shapes of one pooling, as the kernels need them.
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeometry {
    /// Input plane `[height, width]`.
    pub input: [usize; 2],
    /// Output plane `[height, width]`.
    pub output: [usize; 2],
    /// Window `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride, non-zero.
    pub stride: [usize; 2],
    /// Dilation, non-zero.
    pub dilation: [usize; 2],
    /// Padding before (and after) the first row and column.
    pub padding: [usize; 2],
}

#[cfg(feature = "flex")]
impl PoolGeometry {
    /// The window taps `start..end` along `axis` that land inside the input for output position
    /// `out`: [`super::reach`] with the roles of taps and outputs swapped (tap `k` reads `out * s
    /// + k * d - p`).
    fn taps(&self, axis: usize, out: usize) -> std::ops::Range<usize> {
        let (s, d, p) = (self.stride[axis], self.dilation[axis], self.padding[axis]);
        super::reach(self.input[axis], p, out * s, d, self.kernel[axis]).0
    }

    /// For window column `kx`: the output columns whose tap lands inside the input, and the input
    /// column the first of them reads (the next ones read every `s_x`-th after it).
    fn columns(&self, kx: usize) -> (std::ops::Range<usize>, usize) {
        let (s, d, p) = (self.stride[1], self.dilation[1], self.padding[1]);
        super::reach(self.input[1], p, kx * d, s, self.output[1])
    }
}

/// Marks an output whose window holds no input value (only padding): its value is `-inf` and no
/// gradient flows from it.
#[cfg(feature = "flex")]
pub(crate) const NO_INDEX: u32 = u32::MAX;

/// The geometry when the kernel applies to `pool` on `input`, else `None`.
#[cfg(feature = "flex")]
fn geometry(pool: &MaxPool2d, input: &Tensor<4>) -> Option<PoolGeometry> {
    use burn::backend::ops::conv::calculate_pool_output_size;
    use burn::nn::PaddingConfig2d;
    if pool.ceil_mode || !super::on_flex_f32(input) {
        return None;
    }
    let padding = match pool.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return None,
    };
    let [_, _, height, width] = input.dims();
    let (kernel, stride, dilation) = (pool.kernel_size, pool.stride, pool.dilation);
    // Empty planes (whose padded windows would still give outputs) and degenerate windows are
    // left to burn.
    if height == 0 || width == 0 || kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        return None;
    }
    let fits = (height * width) < NO_INDEX as usize;
    let output = [0, 1].map(|a| {
        let (size, span) = ([height, width][a], dilation[a] * (kernel[a] - 1) + 1);
        // burn's formula underflows when the window is wider than the padded input.
        (size + 2 * padding[a] >= span)
            .then(|| calculate_pool_output_size(kernel[a], stride[a], padding[a], dilation[a], size, false))
    });
    let [Some(out_h), Some(out_w)] = output else {
        return None;
    };
    fits.then_some(PoolGeometry {
        input: [height, width],
        output: [out_h, out_w],
        kernel,
        stride,
        dilation,
        padding,
    })
}

/// Max pooling of every `[in_h, in_w]` plane of `x` (planes in parallel): the maxima,
/// `[planes, out_h, out_w]`, and for each the position in its input plane (`y * in_w + x`) it
/// came from, or [`NO_INDEX`]. The first maximum of a window wins, a NaN wins over everything
/// (the last NaN of a window), as in burn-flex and PyTorch.
///
/// Each output row is built tap by tap: for every window position `(ky, kx)` in order, the whole
/// row of candidates (contiguous once the input row is split by column phase) is compared with
/// the row's running maxima by [`update_maxima`]. A window-by-window loop branches on every
/// comparison, and on random data those branches mispredict: that loop was hardly faster than
/// burn-flex's.
#[cfg(feature = "flex")]
pub(crate) fn forward_f32(x: &[f32], g: &PoolGeometry) -> (Vec<f32>, Vec<u32>) {
    use rayon::prelude::*;
    let ([in_h, in_w], [out_h, out_w]) = (g.input, g.output);
    let (in_plane, out_plane) = (in_h * in_w, out_h * out_w);
    let planes = x.len().checked_div(in_plane).unwrap_or(0);
    let mut values = vec![f32::NEG_INFINITY; planes * out_plane];
    let mut indices = vec![NO_INDEX; planes * out_plane];
    if out_plane == 0 || in_plane == 0 {
        return (values, indices);
    }
    let rows: Vec<_> = (0..out_h).map(|y| g.taps(0, y)).collect();
    let columns: Vec<_> = (0..g.kernel[1]).map(|kx| g.columns(kx)).collect();
    let ([s_y, s_x], [d_y, _], [p_y, _]) = (g.stride, g.dilation, g.padding);
    let phase_len = in_w.div_ceil(s_x);
    values
        .par_chunks_mut(out_plane)
        .zip(indices.par_chunks_mut(out_plane))
        .zip(x.par_chunks(in_plane))
        .for_each_init(Vec::new, |phases, ((values, indices), plane)| {
            for (oy, ky_range) in rows.iter().enumerate() {
                let out_row = oy * out_w..(oy + 1) * out_w;
                let row_values = &mut values[out_row.clone()];
                let row_indices = &mut indices[out_row];
                for ky in ky_range.clone() {
                    let iy = oy * s_y + ky * d_y - p_y;
                    let row = &plane[iy * in_w..(iy + 1) * in_w];
                    // The row split by column phase (`ix % s_x`), so that every window column's
                    // candidates are contiguous.
                    let split: &[f32] = if s_x == 1 {
                        row
                    } else {
                        phases.resize(s_x * phase_len, 0.0);
                        crate::split_phases(row, phases, s_x);
                        phases
                    };
                    for (outputs, first) in &columns {
                        if outputs.is_empty() {
                            continue; // this window column only ever reads padding
                        }
                        let start = (first % s_x) * phase_len + first / s_x;
                        let candidates = &split[start..start + outputs.len()];
                        let best = &mut row_values[outputs.clone()];
                        let best_index = &mut row_indices[outputs.clone()];
                        let index = (iy * in_w + first) as u32;
                        update_maxima(best, best_index, candidates, index, s_x as u32);
                    }
                }
            }
        });
    (values, indices)
}

/// One window position's step of [`forward_f32`] along an output row: candidate `j` (input
/// position `index + j * step`) replaces `best[j]` if none was taken yet, if it is larger, or if
/// it is NaN. Branch-free (`|`, not `||`, and masks), so that it vectorises and has no
/// comparisons to mispredict.
#[cfg(feature = "flex")]
#[inline]
fn update_maxima(best: &mut [f32], best_index: &mut [u32], candidates: &[f32], index: u32, step: u32) {
    let n = best.len().min(best_index.len()).min(candidates.len());
    let (best, best_index, candidates) = (&mut best[..n], &mut best_index[..n], &candidates[..n]);
    for j in 0..n {
        let (v, b, i) = (candidates[j], best[j], best_index[j]);
        let take = (i == NO_INDEX) | (v > b) | v.is_nan();
        let mask = (take as u32).wrapping_neg(); // all ones or zero
        best[j] = f32::from_bits((b.to_bits() & !mask) | (v.to_bits() & mask));
        best_index[j] = (i & !mask) | (index.wrapping_add(j as u32 * step) & mask);
    }
}

/// The input gradient of [`forward_f32`]: each output gradient added at its index, planes in
/// parallel; `[planes, in_h, in_w]`.
#[cfg(feature = "flex")]
pub(crate) fn backward_f32(grad: &[f32], indices: &[u32], g: &PoolGeometry) -> Vec<f32> {
    use rayon::prelude::*;
    let (in_plane, out_plane) = (g.input[0] * g.input[1], g.output[0] * g.output[1]);
    debug_assert_eq!(grad.len(), indices.len());
    let planes = grad.len().checked_div(out_plane).unwrap_or(0);
    let mut grad_in = crate::zeroed(planes * in_plane);
    if out_plane == 0 || in_plane == 0 {
        return grad_in;
    }
    grad_in
        .par_chunks_mut(in_plane)
        .zip(grad.par_chunks(out_plane).zip(indices.par_chunks(out_plane)))
        .for_each(|(grad_in, (grad, indices))| {
            // Written before the scatter reads it. The buffer is `calloc`'s, which for a large one
            // (ResNet's: 103 MB) means fresh pages nobody has touched; a first read would map the
            // shared zero page, and the write after it a copy-on-write fault whose TLB flush
            // interrupts the other threads: 7 % of ResNet-18's step until this line.
            grad_in.fill(0.0);
            for (&g, &i) in grad.iter().zip(indices) {
                if i != NO_INDEX {
                    grad_in[i as usize] += g;
                }
            }
        });
    grad_in
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: forward through [`forward_f32`], backward through
    //! [`backward_f32`]. Only `f32` tensors reach it (see [`super::max_pool2d`]).
    use super::{PoolGeometry, backward_f32, forward_f32};
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
    use burn::tensor::{Tensor, TensorData};
    use std::sync::Arc;

    /// Max pooling as one operation.
    #[backend_extension(Flex, Autodiff)]
    pub trait MaxPoolBackend: Backend {
        /// `x` `[batch, channels, in_h, in_w]` pooled as `geometry` says into `[batch, channels,
        /// out_h, out_w]`.
        fn kernel_max_pool2d(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self>;
    }

    /// [`forward_f32`] on a tensor: the output and the indices.
    fn forward(x: FloatTensor<Flex>, g: &PoolGeometry) -> (FloatTensor<Flex>, Vec<u32>) {
        let [batch, channels, _, _] = x.shape().dims::<4>();
        let x = x.to_contiguous();
        let (values, indices) = forward_f32(x.as_slice::<f32>().expect("max_pool2d runs on f32 only"), g);
        let dims = [batch, channels, g.output[0], g.output[1]];
        (
            FloatTensor::<Flex>::from_data(TensorData::new(values, dims)),
            indices,
        )
    }

    impl MaxPoolBackend for Flex {
        fn kernel_max_pool2d(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self> {
            forward(x, &geometry).0
        }
    }

    #[derive(Debug)]
    struct MaxPoolBackward;

    impl Backward<Flex, 1> for MaxPoolBackward {
        /// Where each output came from, the geometry, and the input's dims.
        type State = (Arc<Vec<u32>>, PoolGeometry, [usize; 4]);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(node) = node {
                let (indices, geometry, x_dims) = ops.state;
                let grad = grad.to_contiguous();
                let values = backward_f32(
                    grad.as_slice::<f32>().expect("max_pool2d runs on f32 only"),
                    &indices,
                    &geometry,
                );
                grads.register::<Flex>(
                    node.id,
                    FloatTensor::<Flex>::from_data(TensorData::new(values, x_dims)),
                );
            }
        }
    }

    impl<C: CheckpointStrategy> MaxPoolBackend for Autodiff<Flex, C> {
        fn kernel_max_pool2d(x: FloatTensor<Self>, geometry: PoolGeometry) -> FloatTensor<Self> {
            match MaxPoolBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let x = x.into_primitive();
                    let x_dims = x.shape().dims::<4>();
                    let (output, indices) = forward(x, &geometry);
                    prep.finish((Arc::new(indices), geometry, x_dims), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive(), &geometry).0),
            }
        }
    }

    /// [`super::max_pool2d`] on a flex `f32` tensor.
    pub(super) fn max_pool2d(x: Tensor<4>, geometry: PoolGeometry) -> Tensor<4> {
        Tensor::from_dispatch(<Dispatch as MaxPoolBackend>::kernel_max_pool2d(
            x.into_dispatch(),
            geometry,
        ))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::test_values::values;
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, TensorData};

    fn pool(kernel: usize, stride: usize, padding: PaddingConfig2d, dilation: usize) -> MaxPool2d {
        MaxPool2dConfig::new([kernel, kernel])
            .with_strides([stride, stride])
            .with_padding(padding)
            .with_dilation([dilation, dilation])
            .init()
    }

    fn to_vec(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Values and input gradients equal burn's `MaxPool2d` on flex, with and without autodiff, on
    /// ResNet's pool and other windows; inputs with repeated values exercise the tie rule.
    #[test]
    fn matches_burns_max_pool_and_its_gradient() {
        let cases = [
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 1, [13, 12]), // ResNet's stem pool
            (2, 2, PaddingConfig2d::Valid, 1, [8, 9]),
            (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, [7, 7]), // dilated
            (3, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 2, [9, 10]), // strided and dilated
            (3, 3, PaddingConfig2d::Explicit(2, 2, 2, 2), 1, [5, 6]), // padding past half the window
            (4, 1, PaddingConfig2d::Valid, 1, [4, 4]),                // one output per plane
        ];
        for (kernel, stride, padding, dilation, [h, w]) in cases {
            let p = pool(kernel, stride, padding.clone(), dilation);
            let n = 2 * 3 * h * w;
            // Coarse values, so windows hold ties.
            let data: Vec<f32> = values(n, 7).iter().map(|v| (v * 4.0).round()).collect();
            for device in [Device::flex(), Device::flex().autodiff()] {
                let x = Tensor::<4>::from_data(TensorData::new(data.clone(), [2, 3, h, w]), &device);
                assert!(geometry(&p, &x).is_some());
                assert_eq!(
                    to_vec(max_pool2d(&p, x.clone())),
                    to_vec(p.forward(x)),
                    "{padding:?}"
                );
            }
            let device = Device::flex().autodiff();
            let x = Tensor::<4>::from_data(TensorData::new(data.clone(), [2, 3, h, w]), &device);
            let out_dims = p.forward(x.clone()).dims();
            let upstream_values = values(out_dims.iter().product(), 8);
            let upstream = Tensor::<4>::from_data(TensorData::new(upstream_values, out_dims), &device);
            let grad = |kernel: bool| {
                let x = x.clone().detach().require_grad();
                let y = if kernel {
                    max_pool2d(&p, x.clone())
                } else {
                    p.forward(x.clone())
                };
                let grads = (y * upstream.clone()).sum().backward();
                to_vec(x.grad(&grads).unwrap())
            };
            assert_eq!(
                grad(true),
                grad(false),
                "{kernel} {stride} {padding:?} {dilation}"
            );
        }
    }

    #[test]
    fn nan_wins_and_padding_is_never_chosen() {
        let g = PoolGeometry {
            input: [2, 3],
            output: [2, 2],
            kernel: [2, 2],
            stride: [1, 2],
            dilation: [1, 1],
            padding: [1, 1],
        };
        // Plane: [[-5, NaN, -1], [-7, -2, -3]]; padding around it is never a maximum, even
        // though every value is negative.
        let x = [-5.0, f32::NAN, -1.0, -7.0, -2.0, -3.0];
        let (values, indices) = forward_f32(&x, &g);
        // Windows (rows, columns): (-1..1, -1..1) = {-5}; (-1..1, 1..3) = {NaN, -1};
        // (0..2, -1..1) = {-5, -7}; (0..2, 1..3) = {NaN, -1, -2, -3}.
        assert_eq!(indices, [0, 1, 0, 1]);
        assert_eq!(values[0], -5.0);
        assert!(values[1].is_nan() && values[3].is_nan());
        assert_eq!(values[2], -5.0);
        let grad_in = backward_f32(&[1.0, 2.0, 3.0, 4.0], &indices, &g);
        assert_eq!(grad_in, [4.0, 6.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn uncovered_pools_pass_through() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 1, 6, 6], &device);
        let asymmetric = pool(3, 2, PaddingConfig2d::Explicit(0, 0, 1, 1), 1);
        assert!(geometry(&asymmetric, &x).is_none());
        let same = pool(3, 1, PaddingConfig2d::Same, 1);
        assert!(geometry(&same, &x).is_none());
        let mut ceil = pool(3, 2, PaddingConfig2d::Valid, 1);
        ceil.ceil_mode = true;
        assert!(geometry(&ceil, &x).is_none());
        let empty = Tensor::<4>::zeros([1, 1, 0, 6], &device);
        assert!(geometry(&pool(3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 1), &empty).is_none());
        for p in [asymmetric, same, ceil] {
            assert_eq!(to_vec(max_pool2d(&p, x.clone())), to_vec(p.forward(x.clone())));
        }
    }
}
