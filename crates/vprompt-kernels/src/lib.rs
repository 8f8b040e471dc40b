//! Faster kernels on `flex` for the layers of vprompt's generated backbones.
//!
//! # Feature flags
//! - `flex` (default): the kernels, as Burn backend extensions of the `flex` backend (with `gemm`'s
//!   AVX-512 kernels chosen at run time where the CPU has them).
//! - `wgpu`, `cuda`, `cpu`: forwarded to burn; there the functions are the plain Burn operations.
//!
//! Visual prompting back-propagates through the whole frozen backbone to its input, so the forward
//! pass and the input gradient of every layer are on the training step's critical path. Profiling
//! the step on burn-flex against PyTorch showed where it was slow; each place gets a Burn backend
//! extension here:
//!
//! - [`conv2d::forward`], depthwise convolutions (EfficientNet-Lite0): burn computes their input
//!   gradient as a grouped transposed convolution (a one-column gemm plus col2im per image and
//!   channel), and its forward pass trailed PyTorch's on stride-2 layers and small planes; here
//!   both are direct, one plane at a time, each kernel tap one vectorised multiply-add.
//! - [`conv2d::forward`], dense convolutions (ResNets): burn-flex's forward pass converts the batch
//!   to NHWC on one thread and runs a small gemm per 512 output pixels; here it is im2col and one
//!   gemm per image (`dense`), and the input gradient one gemm and a vectorisable col2im per image.
//!   3 x 3 stride-1 layers (most of a ResNet's arithmetic) take Winograd's F(4 x 4, 3 x 3) both
//!   ways instead (`winograd`; F(2 x 2, 3 x 3) on planes under 12 px): 2.25 multiply-adds per
//!   output and channel pair instead of 9 (4 for F(2 x 2)), and no 9x column matrix.
//! - [`max_pool2d`], max pooling (ResNets' stem): burn-flex's version with indices recomputes each
//!   window's range with integer divisions per output value and branches on every comparison;
//!   here ranges are computed once per row and column and each window position is compared with a
//!   whole output row at once, branch-free.
//! - [`linear`], linear layers (the CLIP ViT): burn keeps a linear layer on `[tokens, batch,
//!   width]` as one small gemm per token position, each packing the weight again; here the
//!   leading dims are folded into the rows and the layer is one product.
//! - [`quick_gelu`], CLIP's `x * sigmoid(1.702 x)`: three operations in burn, the sigmoid on one
//!   thread and a backward of four passes keeping `x` and the sigmoid; here one parallel pass
//!   each way, keeping `x` only.
//! - [`relu6`] and [`relu`] (the ResNets): as `relu(x).clamp_max(6)` ReLU6's backward is a relu
//!   mask plus a comparison and a `mask_fill`, and burn-flex's relu runs on one thread both ways;
//!   here each is one parallel pass over the gradient and the saved output.
//!
//! `vprompt-backbone`'s code generator routes the generated layers through these functions (its
//! `import::layers_through_kernels`, `rectifiers_as_one_op` and `quick_gelu_as_one_op`). On every other device, and for inputs the kernels do not
//! cover, they are exactly the plain Burn operations, so values never depend on the route.

pub mod conv2d;
#[cfg(feature = "flex")]
mod dense;
#[cfg(feature = "flex")]
mod elementwise;
mod linear;
mod max_pool;
mod quick_gelu;
mod rectifier;
#[cfg(feature = "flex")]
mod winograd;

pub use linear::linear;
pub use max_pool::max_pool2d;
pub use quick_gelu::quick_gelu;
pub use rectifier::{relu, relu6};

/// Shapes of one convolution, as the kernels need them (for a depthwise one, `channels_in ==
/// channels_out` is the number of groups).
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Input plane `[height, width]`.
    pub input: [usize; 2],
    /// Output plane `[height, width]`.
    pub output: [usize; 2],
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[vertical, horizontal]`, non-zero.
    pub stride: [usize; 2],
    /// Dilation `[vertical, horizontal]`, non-zero.
    pub dilation: [usize; 2],
    /// Padding before the first row and column; the padding after them only decides how many
    /// output positions exist (`output`).
    pub pad_begin: [usize; 2],
}

/// The instruction set the kernels' own loops (not gemm's, which dispatches itself) run with,
/// detected at run time: the crate is compiled for the target's baseline (SSE2 on x86-64), where
/// the loops vectorise 4 wide; with AVX2 they run 8 wide, with AVX-512 16 wide. Values do not
/// depend on it (no fused multiply-adds in any variant: each lane does the same multiply, then the
/// same add, in the same order).
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    /// The target's baseline.
    Baseline,
    /// x86-64 with AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 with AVX-512 (foundation).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

#[cfg(feature = "flex")]
impl Simd {
    /// The widest variant this CPU runs.
    pub(crate) fn detect() -> Self {
        *Self::available().last().expect("the baseline always runs")
    }

    /// Every variant this CPU runs, narrowest first (the tests run each).
    pub(crate) fn available() -> Vec<Self> {
        #[allow(unused_mut)] // only pushed to on x86-64
        let mut all = vec![Simd::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Simd::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    all.push(Simd::Avx512);
                }
            }
        }
        all
    }

    /// Runs `body` compiled for this instruction set: `body` and what it inlines (the kernels'
    /// plane functions are `#[inline(always)]`) become part of a function with those features.
    #[inline(always)]
    pub(crate) fn run<R>(self, body: impl FnOnce() -> R) -> R {
        match self {
            Simd::Baseline => body(),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => {
                #[target_feature(enable = "avx2")]
                fn avx2<R>(body: impl FnOnce() -> R) -> R {
                    body()
                }
                // SAFETY: `available` listed `Avx2`, so this CPU executes AVX2 instructions.
                #[allow(unsafe_code)]
                unsafe {
                    avx2(body)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                #[target_feature(enable = "avx2,avx512f")]
                fn avx512<R>(body: impl FnOnce() -> R) -> R {
                    body()
                }
                // SAFETY: `available` lists `Avx512` only where it detected both AVX2 and
                // AVX-512F, so this CPU executes their instructions.
                #[allow(unsafe_code)]
                unsafe {
                    avx512(body)
                }
            }
        }
    }
}

/// Splits `row` into its `step` column phases: `split` (`step * row.len().div_ceil(step)`
/// values) holds phase `p` (`row[p], row[p + step], ...`) from `p * row.len().div_ceil(step)`;
/// the last value of a shorter phase is left as it was. Every column a strided window reads is
/// then contiguous. Step 2 writes both phases in one pass over pairs, which vectorises.
#[cfg(feature = "flex")]
#[inline(always)]
pub(crate) fn split_phases(row: &[f32], split: &mut [f32], step: usize) {
    let phase_w = row.len().div_ceil(step);
    if step == 2 {
        let (even, odd) = split[..2 * phase_w].split_at_mut(phase_w);
        let mut pairs = row.chunks_exact(2);
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(&mut pairs) {
            *e = pair[0];
            *o = pair[1];
        }
        if let [last] = pairs.remainder() {
            even[phase_w - 1] = *last;
        }
        return;
    }
    for (phase, split) in split.chunks_exact_mut(phase_w).enumerate().take(step) {
        let values = row.iter().skip(phase).step_by(step);
        for (d, s) in split.iter_mut().zip(values) {
            *d = *s;
        }
    }
}

/// The inverse of [`split_phases`]: `row[ix] += split[ix % step * phase_w + ix / step]` for every
/// column `ix` of `row`, with `phase_w = row.len().div_ceil(step)`.
#[cfg(feature = "flex")]
#[inline(always)]
pub(crate) fn add_merged_phases(split: &[f32], row: &mut [f32], step: usize) {
    let phase_w = row.len().div_ceil(step);
    if step == 2 {
        let (even, odd) = split[..2 * phase_w].split_at(phase_w);
        let mut pairs = row.chunks_exact_mut(2);
        for ((pair, e), o) in (&mut pairs).zip(even).zip(odd) {
            pair[0] += *e;
            pair[1] += *o;
        }
        if let [last] = pairs.into_remainder() {
            *last += even[phase_w - 1];
        }
        return;
    }
    for (phase, split) in split.chunks_exact(phase_w).enumerate().take(step) {
        for (d, s) in row.iter_mut().skip(phase).step_by(step).zip(split) {
            *d += *s;
        }
    }
}

/// Along one axis of a window (a convolution's kernel or a pooling window), for the window offset
/// `shift` (`k * dilation`): the output positions `o` in `0..outputs` whose read `o * stride +
/// shift - pad` lands inside `[0, size)`, and the input position the first of them reads (the next
/// ones read every `stride`-th after it; meaningless when the range is empty).
#[cfg(feature = "flex")]
fn reach(
    size: usize,
    pad: usize,
    shift: usize,
    stride: usize,
    outputs: usize,
) -> (std::ops::Range<usize>, usize) {
    let begin = pad.saturating_sub(shift).div_ceil(stride).min(outputs);
    let end = if size + pad > shift {
        (size + pad - shift).div_ceil(stride).min(outputs)
    } else {
        0
    }
    .max(begin);
    (begin..end, (begin * stride + shift).saturating_sub(pad))
}

/// Images per group when each thread's share of `batch` images is done in groups of about
/// `wanted`: the share split into equal groups (at least 1 image). Shared by the dense kernel's
/// and Winograd's grouping of small planes.
#[cfg(feature = "flex")]
pub(crate) fn images_per_group(batch: usize, threads: usize, wanted: usize) -> usize {
    let per_thread = batch.div_ceil(threads.max(1));
    let groups_per_thread = per_thread.div_ceil(wanted.max(1)).max(1);
    per_thread.div_ceil(groups_per_thread).max(1)
}

/// A buffer of `len` zeros, written in parallel. `vec![0f32; len]` is a single-threaded `memset`
/// whenever glibc reuses a freed block (always, with `vprompt::tune_allocator`), in front of
/// kernels that then run on every core.
#[cfg(feature = "flex")]
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    filled(len, 1 << 16, |_| 0.0)
}

/// A buffer of `len` floats written in parallel, `chunk` at a time (the last chunk may be
/// shorter), chunk `i` all `value(i)`: a convolution's output starting from its bias (`chunk` the
/// output plane), in one pass over fresh memory instead of zeros and then the bias.
#[cfg(feature = "flex")]
#[allow(unsafe_code)]
pub(crate) fn filled(len: usize, chunk: usize, value: impl Fn(usize) -> f32 + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut values = Vec::with_capacity(len);
    if len > 0 {
        let chunk = chunk.max(1);
        values.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk)
            .with_min_len((1 << 14) / chunk + 1)
            .enumerate()
            .for_each(|(i, chunk)| {
                let value = value(i);
                for v in chunk {
                    v.write(value);
                }
            });
    }
    // SAFETY: the chunks above cover the first `len` elements of the spare capacity (capacity
    // `len` was reserved) and each element of each chunk was written; a panic in `value` would
    // have propagated out of `for_each` before this point, leaving `values` empty. `f32` has no
    // invalid bit patterns and no drop.
    unsafe { values.set_len(len) };
    values
}

/// A buffer of `len` floats written in parallel, `chunk` at a time (the last chunk may be
/// shorter), with no zero-fill pass before: `write(scratch, i, unfilled)` writes all of chunk `i`
/// through [`Unfilled`], which checks that it did (a chunk left partly unwritten is a bug and
/// panics). `scratch` is `init()`'s, one per task, reused across its chunks.
///
/// For kernels that build each chunk in a cache-resident scratch buffer anyway (the depthwise
/// convolution's planes): a zero-filled output would cost one more pass over the whole buffer.
#[cfg(feature = "flex")]
#[allow(unsafe_code)]
pub(crate) fn written<S, I, W>(len: usize, chunk: usize, init: I, write: W) -> Vec<f32>
where
    I: Fn() -> S + Sync + Send,
    W: Fn(&mut S, usize, &mut Unfilled<'_>) + Sync + Send,
{
    use rayon::prelude::*;
    assert!(chunk > 0, "written: chunks of 0 floats");
    let mut values = Vec::with_capacity(len);
    values.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each_init(init, |scratch, (i, chunk)| {
            let mut unfilled = Unfilled { chunk, written: 0 };
            write(scratch, i, &mut unfilled);
            assert_eq!(
                unfilled.written,
                unfilled.chunk.len(),
                "written: chunk {i} was not written whole"
            );
        });
    // SAFETY: the chunks above cover the first `len` elements of the spare capacity (capacity
    // `len` was reserved), and every element of every chunk was written: `Unfilled` writes
    // consecutive values from the chunk's start, and the assert checked that they reached its end.
    // A panic would have propagated out of `for_each_init` before this point, leaving `values`
    // empty. `f32` has no drop.
    unsafe { values.set_len(len) };
    values
}

/// One chunk of [`written`]'s buffer, written from its start.
#[cfg(feature = "flex")]
pub(crate) struct Unfilled<'a> {
    chunk: &'a mut [std::mem::MaybeUninit<f32>],
    /// Values written so far: `chunk[..written]`.
    written: usize,
}

#[cfg(feature = "flex")]
impl Unfilled<'_> {
    /// Writes `values` after those written before (panics past the chunk's end).
    pub(crate) fn write(&mut self, values: &[f32]) {
        let end = self.written + values.len();
        self.chunk[self.written..end].write_copy_of_slice(values);
        self.written = end;
    }

    /// Writes `f(a[i], b[i])` for every `i` of `a` after the values written before (`b` as long
    /// as `a`; panics past the chunk's end). Inlined, so that inside `Simd::run` it vectorises.
    #[inline(always)]
    pub(crate) fn write_zipped(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
        assert_eq!(a.len(), b.len(), "write_zipped: operands of one length");
        let end = self.written + a.len();
        for (d, (&v, &w)) in self.chunk[self.written..end].iter_mut().zip(a.iter().zip(b)) {
            d.write(f(v, w));
        }
        self.written = end;
    }
}

/// Whether `tensor` lives on a `flex` device (with or without autodiff) in `f32`: where the
/// extensions in this module run.
#[cfg(feature = "flex")]
fn on_flex_f32<const D: usize>(tensor: &burn::tensor::Tensor<D>) -> bool {
    tensor.dtype() == burn::tensor::DType::F32
        && tensor.device().without_autodiff() == burn::tensor::Device::flex()
}

/// Inputs shared by the kernels' tests.
#[cfg(all(test, feature = "flex"))]
mod test_values {
    /// Deterministic values in [-1, 1).
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503))
                    >> 8)
                    % 2000) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The input position output position `[y, x]` reads through kernel tap `[ky, kx]`, by
    /// definition; `None` in the padding.
    pub(crate) fn input_position(
        g: &super::Geometry,
        [y, x]: [usize; 2],
        [ky, kx]: [usize; 2],
    ) -> Option<[usize; 2]> {
        let iy = (y * g.stride[0] + ky * g.dilation[0]).checked_sub(g.pad_begin[0])?;
        let ix = (x * g.stride[1] + kx * g.dilation[1]).checked_sub(g.pad_begin[1])?;
        (iy < g.input[0] && ix < g.input[1]).then_some([iy, ix])
    }

    /// The input gradient of a convolution with `groups` groups (1 for a dense layer,
    /// `channels_in` for a depthwise one) by definition: every (output position, tap) pair,
    /// bounds-checked. `grad_out` is `[batch, c_out, out_h, out_w]`, `weight` `[c_out, c_in /
    /// groups, k_h, k_w]`; the result is `[batch, c_in, in_h, in_w]`.
    pub(crate) fn naive_input_grad(
        grad_out: &[f32],
        weight: &[f32],
        g: &super::Geometry,
        groups: usize,
    ) -> Vec<f32> {
        let ([ih, iw], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
        let (per_group_in, per_group_out) = (g.channels_in / groups, g.channels_out / groups);
        let mut grad_in = vec![0f32; g.batch * g.channels_in * ih * iw];
        for n in 0..g.batch {
            for o in 0..g.channels_out {
                let group = o / per_group_out;
                for y in 0..oh {
                    for x in 0..ow {
                        let upstream = grad_out[((n * g.channels_out + o) * oh + y) * ow + x];
                        for local in 0..per_group_in {
                            let c = group * per_group_in + local;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let Some([iy, ix]) = input_position(g, [y, x], [ky, kx]) else {
                                        continue;
                                    };
                                    grad_in[((n * g.channels_in + c) * ih + iy) * iw + ix] +=
                                        weight[((o * per_group_in + local) * kh + ky) * kw + kx] * upstream;
                                }
                            }
                        }
                    }
                }
            }
        }
        grad_in
    }

    /// A convolution's output size along one axis, by definition.
    pub(crate) fn out_size(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad: (usize, usize),
    ) -> usize {
        (input + pad.0 + pad.1 - dilation * (kernel - 1) - 1) / stride + 1
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    /// Rows of odd and even length, steps 2 (the paired loop) and 3: every column lands in its
    /// phase at `ix % step * phase_w + ix / step`, and merging adds each back where it came from.
    #[test]
    fn phases_split_and_merge_back() {
        for (len, step) in [(7usize, 2usize), (8, 2), (1, 2), (10, 3), (11, 3)] {
            let row: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
            let phase_w = len.div_ceil(step);
            let mut split = vec![-1.0; step * phase_w];
            super::split_phases(&row, &mut split, step);
            for (ix, &v) in row.iter().enumerate() {
                assert_eq!(
                    split[ix % step * phase_w + ix / step],
                    v,
                    "len {len} step {step} ix {ix}"
                );
            }
            let mut merged = vec![0.5; len];
            super::add_merged_phases(&split, &mut merged, step);
            let expected: Vec<f32> = row.iter().map(|v| v + 0.5).collect();
            assert_eq!(merged, expected, "len {len} step {step}");
        }
    }

    #[test]
    fn written_chunks_and_filled_values() {
        let values = super::written(
            12,
            4,
            || 0,
            |_, i, chunk| {
                chunk.write(&[i as f32; 3]);
                chunk.write(&[-1.0]);
            },
        );
        assert_eq!(values, [0., 0., 0., -1., 1., 1., 1., -1., 2., 2., 2., -1.]);
        assert_eq!(super::filled(5, 2, |i| i as f32), [0., 0., 1., 1., 2.]);
        assert_eq!(super::zeroed(3), [0.0; 3]);
        assert!(super::written(0, 4, || 0, |_, _, _| {}).is_empty());
        let shorter_last = super::written(
            5,
            2,
            || 0,
            |_, i, chunk| {
                let a = [i as f32; 2];
                let n = if i == 2 { 1 } else { 2 };
                chunk.write_zipped(&a[..n], &[10.0, 20.0][..n], |v, w| v + w);
            },
        );
        assert_eq!(shorter_last, [10., 20., 11., 21., 12.]);
    }

    #[test]
    #[should_panic(expected = "was not written whole")]
    fn a_chunk_written_in_part_panics() {
        super::written(8, 4, || 0, |_, _, chunk| chunk.write(&[1.0; 3]));
    }

    #[test]
    #[should_panic]
    fn writing_past_a_chunk_panics() {
        super::written(8, 4, || 0, |_, _, chunk| chunk.write(&[1.0; 5]));
    }
}
