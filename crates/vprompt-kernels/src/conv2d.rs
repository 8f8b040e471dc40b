//! Convolutions with faster kernels on `flex`: the forward pass and the input gradient of
//! depthwise convolutions (`groups == channels_in == channels_out`) and of dense ones (`groups ==
//! 1`).
//!
//! **Depthwise.** Measured one layer at a time (`cargo bench --bench conv_layers`), burn-flex took
//! 2.47 s for the input gradients of Lite0's 16 depthwise layers at batch 32 against PyTorch's
//! 1.27 s: burn runs the gradient as a grouped transposed convolution, one single-column gemm plus
//! a scalar col2im per (image, channel), almost all overhead for one channel. Its forward pass was
//! behind PyTorch's too on stride-2 layers and small planes. Here both directions work on one
//! (image, channel) plane at a time, in parallel over planes, with no im2col, gemm or col2im:
//! - planes whose output fits the L1 cache (all of Lite0's but the 112 px stride-1 layer) are
//!   laid out flat, zero-padded and split by stride phase (`FlatPlane`), so that each kernel tap
//!   reads one contiguous run of the plane; blocks of 64 outputs are summed over every tap in
//!   registers and stored once (`sum_taps`), forward (`gather`) and backward (`scatter`, the
//!   transpose written as a gather over the spread output gradient);
//! - larger planes go one row at a time (`gather_plane`, `scatter_plane`), stride-1 rows
//!   being contiguous multiply-adds.
//!
//! The loops run with AVX2 or AVX-512 where the CPU has them (`Simd`). Both directions add the
//! taps in burn-flex's order, and the forward the bias last, so their values are burn-flex's bit
//! for bit (Lite0's input-gradient reference test is sensitive to that, through ReLU6's kinks).
//!
//! **Dense.** On ResNet-18 it was the other way round: burn-flex's forward passes took 1.5x
//! PyTorch's while the input gradients were at parity. The forward is [`super::dense`]'s im2col +
//! one gemm per image. The input gradient is [`super::dense`]'s too, one gemm per image and a
//! col2im whose stride-1 rows are contiguous additions; burn-flex's transposed convolution adds
//! one value at a time with index arithmetic per element (10 % of ResNet-18's step).
//!
//! In both, the weight and bias gradients, only needed when the backbone is not frozen, stay
//! burn-flex's. On every other device and for layers the kernels do not cover (`Same` padding, no
//! bias, not `f32`, grouped but not depthwise), [`forward`] is exactly [`Conv2d::forward`].

#[cfg(feature = "flex")]
use super::{Geometry, Simd};
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
    input_grad_f32_with(Simd::detect(), grad_out, weight, geometry)
}

#[cfg(feature = "flex")]
/// [`input_grad_f32`] with the given instruction set.
fn input_grad_f32_with(simd: Simd, grad_out: &[f32], weight: &[f32], geometry: &Geometry) -> Vec<f32> {
    let [in_h, in_w] = geometry.input;
    let [out_h, out_w] = geometry.output;
    let [k_h, k_w] = geometry.kernel;
    let (in_plane, out_plane, taps) = (in_h * in_w, out_h * out_w, k_h * k_w);
    debug_assert_eq!(grad_out.len(), geometry.batch * geometry.channels_in * out_plane);
    debug_assert_eq!(weight.len(), geometry.channels_in * taps);
    let len = geometry.batch * geometry.channels_in * in_plane;
    if len == 0 || out_plane == 0 {
        return crate::zeroed(len);
    }
    let columns = tap_columns(geometry);
    let flat = FlatPlane::fits(geometry);
    // Each plane is built in `grad_in` (scratch, in cache) and then copied out whole.
    crate::written(
        len,
        in_plane,
        || (Vec::new(), Vec::new(), Vec::new()),
        |(first, second, grad_in), plane, chunk| {
            let channel = plane % geometry.channels_in;
            let weight = &weight[channel * taps..(channel + 1) * taps];
            let grad_out = &grad_out[plane * out_plane..(plane + 1) * out_plane];
            grad_in.resize(in_plane, 0.0);
            simd.run(
                #[inline(always)]
                || match &flat {
                    // Writes every input position.
                    Some(flat) => flat.scatter(grad_out, weight, geometry, grad_in, first, second),
                    // Adds into the plane, from zero.
                    None => {
                        grad_in.fill(0.0);
                        scatter_plane(grad_out, weight, geometry, &columns, grad_in, first)
                    }
                },
            );
            chunk.write(grad_in);
        },
    )
}

#[cfg(feature = "flex")]
/// The output of a depthwise convolution:
/// `out[n, c, oy, ox] = bias[c] + sum over ky, kx of weight[c, ky, kx] * x[n, c, oy*sy + ky*dy - py, ox*sx + kx*dx - px]`
/// over the kernel taps that land inside the input.
///
/// `x` is `[batch, channels, in_h, in_w]`, `weight` `[channels, 1, k_h, k_w]`, `bias`
/// `[channels]`, all contiguous; the result is `[batch, channels, out_h, out_w]`. Planes are
/// independent and run in parallel.
pub(crate) fn forward_f32(x: &[f32], weight: &[f32], bias: &[f32], geometry: &Geometry) -> Vec<f32> {
    forward_f32_with(Simd::detect(), x, weight, bias, geometry)
}

#[cfg(feature = "flex")]
/// [`forward_f32`] with the given instruction set.
fn forward_f32_with(simd: Simd, x: &[f32], weight: &[f32], bias: &[f32], geometry: &Geometry) -> Vec<f32> {
    let [in_h, in_w] = geometry.input;
    let [out_h, out_w] = geometry.output;
    let [k_h, k_w] = geometry.kernel;
    let (in_plane, out_plane, taps) = (in_h * in_w, out_h * out_w, k_h * k_w);
    debug_assert_eq!(x.len(), geometry.batch * geometry.channels_in * in_plane);
    debug_assert_eq!(weight.len(), geometry.channels_in * taps);
    debug_assert_eq!(bias.len(), geometry.channels_in);
    let len = geometry.batch * geometry.channels_in * out_plane;
    if len == 0 || in_plane == 0 {
        // Every tap reads padding: the bias alone.
        return crate::filled(len, out_plane, |plane| bias[plane % geometry.channels_in]);
    }
    let columns = tap_columns(geometry);
    let flat = FlatPlane::fits(geometry);
    // Each plane is built in `out` (scratch, in cache) and then copied out whole.
    crate::written(
        len,
        out_plane,
        || (Vec::new(), Vec::new(), Vec::new()),
        |(first, second, out), plane, chunk| {
            let channel = plane % geometry.channels_in;
            let weight = &weight[channel * taps..(channel + 1) * taps];
            let bias = bias[channel];
            let x = &x[plane * in_plane..(plane + 1) * in_plane];
            out.resize(out_plane, 0.0);
            simd.run(
                #[inline(always)]
                || match &flat {
                    Some(flat) => flat.gather(x, weight, bias, geometry, out, first, second),
                    None => gather_plane(x, weight, bias, geometry, &columns, out, first),
                },
            );
            chunk.write(out);
        },
    )
}

#[cfg(feature = "flex")]
/// `dst[i] += w * src[i]`: blocks of 32 through the plain loop, then eight lanes at a time. A plain
/// loop alone is unrolled four vectors deep, so rows shorter than 32 (with AVX2) would run
/// entirely in its scalar tail.
#[inline(always)]
fn axpy(dst: &mut [f32], w: f32, src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    // Whole blocks of 32 first, where the unrolled loop runs without a tail.
    let bulk = dst.len() / 32 * 32;
    let (head, dst) = dst.split_at_mut(bulk);
    let (head_src, src) = src.split_at(bulk);
    for (d, s) in head.iter_mut().zip(head_src) {
        *d += w * s;
    }
    let mut dst = dst.chunks_exact_mut(8);
    let mut src = src.chunks_exact(8);
    for (d, s) in (&mut dst).zip(&mut src) {
        for (d, s) in d.iter_mut().zip(s) {
            *d += w * s;
        }
    }
    for (d, s) in dst.into_remainder().iter_mut().zip(src.remainder()) {
        *d += w * s;
    }
}

#[cfg(feature = "flex")]
/// The floats [`sum_taps`] computes at a time in its last blocks: one AVX-512 vector.
const TAP_LANES: usize = 16;

#[cfg(feature = "flex")]
/// `acc[i] = sum over (t, start) of taps, in order, of weight[t] * src[start + i]` for every `i`
/// of `acc`, whose length is a multiple of [`TAP_LANES`]; no taps leave `acc` zero.
///
/// Block by block: each block of `acc` is summed over all taps in registers and stored once,
/// rather than loaded and stored again for every tap (which bound the loop by stores), and blocks
/// of four vectors keep four independent chains of additions in flight. Every lane multiplies and
/// then adds, starting from zero, in tap order: the values of one `axpy` per tap.
#[inline(always)]
fn sum_taps(acc: &mut [f32], weight: &[f32], taps: &[(usize, usize)], src: &[f32]) {
    #[inline(always)]
    fn block<const N: usize>(
        acc: &mut [f32],
        at: usize,
        weight: &[f32],
        taps: &[(usize, usize)],
        src: &[f32],
    ) {
        let mut sum = [0.0f32; N];
        for &(tap, start) in taps {
            let w = weight[tap];
            for (s, &x) in sum.iter_mut().zip(&src[start + at..start + at + N]) {
                *s += w * x;
            }
        }
        acc[at..at + N].copy_from_slice(&sum);
    }
    debug_assert_eq!(acc.len() % TAP_LANES, 0);
    const WIDE: usize = 4 * TAP_LANES;
    let wide = acc.len() / WIDE * WIDE;
    for at in (0..wide).step_by(WIDE) {
        block::<WIDE>(acc, at, weight, taps, src);
    }
    for at in (wide..acc.len()).step_by(TAP_LANES) {
        block::<TAP_LANES>(acc, at, weight, taps, src);
    }
}

#[cfg(feature = "flex")]
/// A depthwise plane computed as one contiguous run per kernel tap ([`sum_taps`]), for planes
/// small enough that per-row loops would be mostly loop overhead (all of Lite0's but the 112 px
/// stride-1 layer).
///
/// The input is copied, zero-padded on every side, into `s_y * s_x` phase planes: phase `(r, c)`
/// holds the padded positions `(Y, X)` with `Y % s_y == r` and `X % s_x == c` at `[Y / s_y, X /
/// s_x]`, each plane `width` wide and kept flat. Output `(oy, ox)` reads padded `(oy*s_y + y,
/// ox*s_x + x)` through tap `(y, x) = (ky*d_y, kx*d_x)`, that is phase `(y % s_y, x % s_x)` at
/// `[oy + y / s_y, ox + x / s_x]`: for a fixed tap, one contiguous run over all output rows at
/// once, if every output row is computed `width` wide. The `width - out_w` extra columns per row
/// are computed and dropped. Stride 1 has one phase, the padded plane itself.
struct FlatPlane {
    /// Columns of a phase plane.
    width: usize,
    /// Floats per phase plane: its rows, and the tail the last row's extra columns read, rounded
    /// up to whole [`TAP_LANES`].
    plane_len: usize,
    /// The forward's taps for [`sum_taps`]: each tap (`ky * k_w + kx`) with where it starts
    /// reading in the phase planes ([`Self::tap_start`]).
    taps: Vec<(usize, usize)>,
    /// The input gradient's taps for [`sum_taps`], per phase plane: the taps that read that
    /// plane, in tap order, each with where it reads in the spread output gradient
    /// ([`Self::scatter`]): `lead` minus its start within the phase plane.
    phase_taps: Vec<Vec<(usize, usize)>>,
    /// The largest start of a tap within its phase plane: the zeros [`Self::scatter`] puts before
    /// the output gradient, so that no tap reads before it.
    lead: usize,
}

#[cfg(feature = "flex")]
impl FlatPlane {
    /// Floats of the flat output (one plane, `out_h x width`) up to which this layout is used: 16
    /// KiB, within the L1 cache with the run it reads.
    const MAX_OUTPUT: usize = 4096;

    /// The layout for `geometry` if its flat output fits [`Self::MAX_OUTPUT`].
    fn fits(geometry: &Geometry) -> Option<Self> {
        let [in_h, in_w] = geometry.input;
        let [out_h, out_w] = geometry.output;
        let [k_h, k_w] = geometry.kernel;
        let [s_y, s_x] = geometry.stride;
        let [d_y, d_x] = geometry.dilation;
        let [p_y, p_x] = geometry.pad_begin;
        // The largest row and column offset of a tap within its phase plane.
        let (reach_y, reach_x) = ((k_h - 1) * d_y / s_y, (k_w - 1) * d_x / s_x);
        let width = (p_x + in_w).div_ceil(s_x).max(out_w + reach_x);
        let height = (p_y + in_h).div_ceil(s_y).max(out_h + reach_y);
        if out_h * width > Self::MAX_OUTPUT {
            return None;
        }
        let mut flat = Self {
            width,
            plane_len: (height * width + reach_x).next_multiple_of(TAP_LANES),
            taps: Vec::new(),
            phase_taps: vec![Vec::new(); s_y * s_x],
            lead: 0,
        };
        flat.taps = (0..k_h * k_w)
            .map(|tap| (tap, flat.tap_start(geometry, tap)))
            .collect();
        let within = |start: usize| start % flat.plane_len;
        flat.lead = flat
            .taps
            .iter()
            .map(|&(_, start)| within(start))
            .max()
            .unwrap_or(0);
        for &(tap, start) in &flat.taps {
            flat.phase_taps[start / flat.plane_len].push((tap, flat.lead - within(start)));
        }
        Some(flat)
    }

    /// Floats of all phase planes together.
    fn padded_len(&self, geometry: &Geometry) -> usize {
        geometry.stride[0] * geometry.stride[1] * self.plane_len
    }

    /// Floats of the flat output (`out_h x width`) rounded up to whole blocks of [`TAP_LANES`]:
    /// what [`Self::gather`] computes (reading at most that many floats past
    /// [`Self::padded_len`]).
    fn lanes(&self, geometry: &Geometry) -> usize {
        (geometry.output[0] * self.width).next_multiple_of(TAP_LANES)
    }

    /// Where tap `tap` (`ky * k_w + kx`) starts reading in the phase planes.
    #[inline(always)]
    fn tap_start(&self, geometry: &Geometry, tap: usize) -> usize {
        let k_w = geometry.kernel[1];
        let [s_y, s_x] = geometry.stride;
        let (y, x) = (
            (tap / k_w) * geometry.dilation[0],
            (tap % k_w) * geometry.dilation[1],
        );
        ((y % s_y) * s_x + x % s_x) * self.plane_len + (y / s_y) * self.width + x / s_x
    }

    /// Calls `each(ix0, at)` for every column phase of input row `iy`: the input columns `ix0,
    /// ix0 + s_x, ...` are the phase-plane positions `at, at + 1, ...`.
    #[inline(always)]
    fn row_phases(&self, geometry: &Geometry, iy: usize, mut each: impl FnMut(usize, usize)) {
        let [s_y, s_x] = geometry.stride;
        let [p_y, p_x] = geometry.pad_begin;
        let y = p_y + iy;
        for c in 0..s_x {
            let ix0 = (c + s_x - p_x % s_x) % s_x; // the first input column with X % s_x == c
            let plane = (y % s_y) * s_x + c;
            each(
                ix0,
                plane * self.plane_len + (y / s_y) * self.width + (p_x + ix0) / s_x,
            );
        }
    }

    /// For horizontal stride 2: where input row `iy`'s even columns (`[0]`) and odd columns
    /// (`[1]`) start in the phase planes ([`Self::row_phases`]).
    #[inline(always)]
    fn column_phases_of_two(&self, geometry: &Geometry, iy: usize) -> [usize; 2] {
        debug_assert_eq!(geometry.stride[1], 2);
        let mut at = [0; 2];
        self.row_phases(geometry, iy, |ix0, start| at[ix0] = start);
        at
    }

    /// One plane of [`forward_f32`]: `padded` and `acc` are scratch, `padded`'s border kept zero
    /// between planes of one call (every plane writes the same positions).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn gather(
        &self,
        x: &[f32],
        weight: &[f32],
        bias: f32,
        geometry: &Geometry,
        out: &mut [f32],
        padded: &mut Vec<f32>,
        acc: &mut Vec<f32>,
    ) {
        let in_w = geometry.input[1];
        let out_w = geometry.output[1];
        let s_x = geometry.stride[1];
        // The slack past the phase planes stays zero: only the rounded-up block reads it.
        padded.resize(self.padded_len(geometry) + TAP_LANES, 0.0);
        for (iy, row) in x.chunks_exact(in_w).enumerate() {
            if s_x == 2 {
                // Even and odd columns read as pairs, which vectorises (a stride does not).
                let at = self.column_phases_of_two(geometry, iy);
                for (ix0, at) in at.into_iter().enumerate() {
                    let phase = &mut padded[at..at + (in_w - ix0).div_ceil(2)];
                    for (p, pair) in phase.iter_mut().zip(row[ix0..].chunks(2)) {
                        *p = pair[0];
                    }
                }
                continue;
            }
            self.row_phases(geometry, iy, |ix0, at| {
                if s_x == 1 {
                    padded[at..at + in_w].copy_from_slice(row);
                } else {
                    for (p, &v) in padded[at..].iter_mut().zip(row[ix0..].iter().step_by(s_x)) {
                        *p = v;
                    }
                }
            });
        }
        acc.resize(self.lanes(geometry), 0.0);
        sum_taps(acc, weight, &self.taps, padded);
        // The bias last, as in the row path.
        for (out, acc) in out.chunks_exact_mut(out_w).zip(acc.chunks_exact(self.width)) {
            for (o, &a) in out.iter_mut().zip(acc) {
                *o = a + bias;
            }
        }
    }

    /// One plane of [`input_grad_f32`], the transpose of [`Self::gather`]: the output gradient is
    /// copied into `spread` (`out_h x width` after [`Self::lead`] zeros, its extra columns and
    /// the zeros after it kept zero between planes of one call), and each phase plane of `acc`
    /// sums, position by position, the taps that read it, weighted, over the output gradient
    /// where they read (the transpose's gather form: tap `t` carried position `p` of its phase
    /// plane to flat output position `p - start`, so `p` sums `w_t * spread[lead - start + p]`).
    /// The input positions of `acc` are the result.
    #[inline(always)]
    fn scatter(
        &self,
        grad_out: &[f32],
        weight: &[f32],
        geometry: &Geometry,
        grad_in: &mut [f32],
        spread: &mut Vec<f32>,
        acc: &mut Vec<f32>,
    ) {
        let in_w = geometry.input[1];
        let out_w = geometry.output[1];
        let s_x = geometry.stride[1];
        // Every read is below lead + plane_len (a start within a phase plane is at least 0).
        spread.resize(self.lead + self.plane_len, 0.0);
        for (spread, row) in spread[self.lead..]
            .chunks_exact_mut(self.width)
            .zip(grad_out.chunks_exact(out_w))
        {
            spread[..out_w].copy_from_slice(row);
        }
        acc.resize(self.padded_len(geometry), 0.0);
        for (acc, taps) in acc.chunks_exact_mut(self.plane_len).zip(&self.phase_taps) {
            sum_taps(acc, weight, taps, spread);
        }
        for (iy, row) in grad_in.chunks_exact_mut(in_w).enumerate() {
            if s_x == 2 {
                // Even and odd columns written as pairs, which vectorises (a stride does not).
                let [even, odd] = self.column_phases_of_two(geometry, iy).map(|at| &acc[at..]);
                let mut pairs = row.chunks_exact_mut(2);
                for ((pair, &e), &o) in (&mut pairs).zip(even).zip(odd) {
                    pair[0] = e;
                    pair[1] = o;
                }
                if let [last] = pairs.into_remainder() {
                    *last = even[in_w / 2];
                }
                continue;
            }
            self.row_phases(geometry, iy, |ix0, at| {
                if s_x == 1 {
                    row.copy_from_slice(&acc[at..at + in_w]);
                } else {
                    for (g, &v) in row[ix0..].iter_mut().step_by(s_x).zip(&acc[at..]) {
                        *g = v;
                    }
                }
            });
        }
    }
}

#[cfg(feature = "flex")]
/// One (image, channel) plane of [`forward_f32`], one output row at a time: each kernel tap adds
/// its weighted input row in, then the bias.
///
/// Horizontally a tap reads every `s_x`-th input column, so for `s_x > 1` the plane is first
/// copied into `phased` split by column phase (`ix % s_x`), where each tap's reads are contiguous
/// and the inner loop vectorises. For `s_x == 1` the taps read the input rows as they are.
#[inline(always)] // compiled into each of `Simd::run`'s instruction-set variants
fn gather_plane(
    x: &[f32],
    weight: &[f32],
    bias: f32,
    geometry: &Geometry,
    columns: &[TapColumns],
    out: &mut [f32],
    phased: &mut Vec<f32>,
) {
    let [in_h, in_w] = geometry.input;
    let out_w = geometry.output[1];
    let [k_h, k_w] = geometry.kernel;
    let [s_y, s_x] = geometry.stride;
    let d_y = geometry.dilation[0];
    let p_y = geometry.pad_begin[0];
    let phase_len = in_w.div_ceil(s_x);
    let row_len = s_x * phase_len;
    let source: &[f32] = if s_x == 1 {
        x
    } else {
        phased.resize(in_h * row_len, 0.0);
        for (row, phased) in x.chunks_exact(in_w).zip(phased.chunks_exact_mut(row_len)) {
            for (phase, phased) in phased.chunks_exact_mut(phase_len).enumerate() {
                for (p, &v) in phased.iter_mut().zip(row.iter().skip(phase).step_by(s_x)) {
                    *p = v;
                }
            }
        }
        phased
    };
    for (oy, out_row) in out.chunks_exact_mut(out_w).enumerate() {
        out_row.fill(0.0);
        for ky in 0..k_h {
            // The input row output row `oy` reads through kernel row `ky`, if inside.
            let Some(iy) = (oy * s_y + ky * d_y).checked_sub(p_y) else {
                continue;
            };
            if iy >= in_h {
                break; // the next kernel rows read further down
            }
            let in_row = &source[iy * row_len..(iy + 1) * row_len];
            for (kx, tap) in columns.iter().enumerate() {
                if tap.outputs.is_empty() {
                    continue; // this tap only ever reads padding
                }
                let w = weight[ky * k_w + kx];
                let base = tap.phase * phase_len + tap.start;
                axpy(
                    &mut out_row[tap.outputs.clone()],
                    w,
                    &in_row[base..base + tap.outputs.len()],
                );
            }
        }
        // The bias last, as burn-flex and PyTorch add it: the same rounding, so that the
        // activations' kinks (ReLU6) fall on the same side.
        for o in out_row.iter_mut() {
            *o += bias;
        }
    }
}

#[cfg(feature = "flex")]
/// Where one horizontal kernel tap `kx` meets the input, for a depthwise plane: it joins output
/// column `ox` with input column `ix = ox*s_x + kx*d_x - p_x`, for the output columns `outputs`
/// whose `ix` is inside the input ([`super::reach`]); the first of those `ix` lies in column phase
/// `phase = ix % s_x` at index `start = ix / s_x` within it (a phase holds every `s_x`-th column).
/// For a tap that only ever meets padding `outputs` is empty and the rest meaningless.
struct TapColumns {
    outputs: std::ops::Range<usize>,
    phase: usize,
    start: usize,
}

#[cfg(feature = "flex")]
/// [`TapColumns`] of every horizontal tap, in `kx` order; an empty tap keeps its slot (with an
/// empty `outputs`) so that `kx` still indexes the weights.
fn tap_columns(geometry: &Geometry) -> Vec<TapColumns> {
    let in_w = geometry.input[1];
    let out_w = geometry.output[1];
    let (s_x, d_x, p_x) = (geometry.stride[1], geometry.dilation[1], geometry.pad_begin[1]);
    (0..geometry.kernel[1])
        .map(|kx| {
            let (outputs, ix) = super::reach(in_w, p_x, kx * d_x, s_x, out_w);
            TapColumns {
                outputs,
                phase: ix % s_x,
                start: ix / s_x,
            }
        })
        .collect()
}

#[cfg(feature = "flex")]
/// One (image, channel) plane of [`input_grad_f32`], one input row at a time: each kernel row
/// that read this input row adds its weighted output-gradient row in.
///
/// Horizontally a tap writes every `s_x`-th input column, so for `s_x > 1` the row is built in
/// `row`, split by column phase (`ix % s_x`), where each tap's writes are contiguous and the inner
/// loop vectorises, and then interleaved into the input row. For `s_x == 1` the taps add straight
/// into the input row.
#[inline(always)] // compiled into each of `Simd::run`'s instruction-set variants
fn scatter_plane(
    grad_out: &[f32],
    weight: &[f32],
    geometry: &Geometry,
    columns: &[TapColumns],
    grad_in: &mut [f32],
    row: &mut Vec<f32>,
) {
    let [in_h, in_w] = geometry.input;
    let [out_h, out_w] = geometry.output;
    let [k_h, k_w] = geometry.kernel;
    let [s_y, s_x] = geometry.stride;
    let d_y = geometry.dilation[0];
    let p_y = geometry.pad_begin[0];
    let phase_len = in_w.div_ceil(s_x);
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
            for (kx, tap) in columns.iter().enumerate() {
                if tap.outputs.is_empty() {
                    continue; // this tap only ever reads padding
                }
                let w = weight[ky * k_w + kx];
                let source = &out_row[tap.outputs.clone()];
                let base = tap.phase * phase_len + tap.start;
                axpy(&mut target[base..base + source.len()], w, source);
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
    //! The backend extension: forward through [`direct_forward`], backward through
    //! [`input_grad_f32`], [`dense::input_grad_f32`] or burn-flex.
    use super::{Geometry, forward_f32, input_grad_f32, padding_pairs};
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
        /// `[c_out]`, with `options.groups` either 1 (dense) or `c_in == c_out` (depthwise);
        /// returns `[batch, c_out, out_h, out_w]`.
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
            direct_forward(x, weight, bias, &options)
        }
    }

    /// The output through [`dense::forward_f32`] for a dense layer, [`forward_f32`] for a
    /// depthwise one (only `f32` reaches this op: [`options`]).
    fn direct_forward(
        x: FloatTensor<Flex>,
        weight: FloatTensor<Flex>,
        bias: FloatTensor<Flex>,
        options: &ConvOptions<2>,
    ) -> FloatTensor<Flex> {
        let x_dims = x.shape().dims::<4>();
        let weight_dims = weight.shape().dims::<4>();
        let (begin, end) = (options.padding_begin(), options.padding_end());
        let [out_h, out_w] = [0, 1].map(|a| {
            // The padding on both sides (a depthwise layer's may differ).
            let (kernel, padded) = (weight_dims[2 + a], x_dims[2 + a] + begin[a] + end[a]);
            calculate_conv_output_size(kernel, options.stride[a], 0, options.dilation[a], padded)
        });
        let out_dims = [x_dims[0], weight_dims[0], out_h, out_w];
        let geometry = geometry(x_dims, weight_dims, out_dims, options);
        let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
        let x = x.as_slice::<f32>().expect("options() admits f32 only");
        let weight = weight.as_slice::<f32>().expect("options() admits f32 only");
        let bias = bias.as_slice::<f32>().expect("options() admits f32 only");
        let values = if options.groups == 1 {
            dense::forward_f32(x, weight, Some(bias), &geometry)
        } else {
            forward_f32(x, weight, bias, &geometry)
        };
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
    /// canonical depthwise layer or a dense one. `None` sends the call to [`Conv2d::forward`].
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
    use crate::test_values::{input_position, naive_input_grad, out_size, values};
    use burn::module::Module;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    /// `conv` on a fresh tracked copy of `x`, through the kernels (`direct`) or through burn's
    /// `Conv2d::forward`, and the gradients of `sum(y * upstream)`: the output, that copy (for
    /// its gradient) and the gradients.
    fn forward_and_backward(
        conv: &Conv2d,
        x: &Tensor<4>,
        upstream: &Tensor<4>,
        direct: bool,
    ) -> (Tensor<4>, Tensor<4>, burn::tensor::Gradients) {
        let x = x.clone().detach().require_grad();
        let y = if direct {
            forward(conv, x.clone())
        } else {
            conv.forward(x.clone())
        };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        (y, x, grads)
    }

    /// The depthwise geometries both directions are tested on (3 channels, batch 2).
    fn depthwise_geometries() -> Vec<Geometry> {
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
            ([2, 9], [5, 3], [1, 1], [1, 1], [(3, 3), (1, 1)]), // rows that only read padding
            ([66, 70], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]), // too large for FlatPlane
            ([150, 170], [3, 3], [2, 2], [1, 1], [(0, 1), (0, 1)]), // the same, stride 2
        ];
        cases
            .into_iter()
            .map(|(input, kernel, stride, dilation, padding)| Geometry {
                batch: 2,
                channels_in: 3,
                channels_out: 3,
                input,
                output: [0, 1].map(|a| out_size(input[a], kernel[a], stride[a], dilation[a], padding[a])),
                kernel,
                stride,
                dilation,
                pad_begin: [padding[0].0, padding[1].0],
            })
            .collect()
    }

    fn assert_elementwise(direct: &[f32], naive: &[f32], g: &Geometry) {
        assert_eq!(direct.len(), naive.len(), "{g:?}");
        for (i, (a, b)) in direct.iter().zip(naive).enumerate() {
            assert!((a - b).abs() <= 1e-5, "{g:?}: element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn flat_planes_are_used_for_small_planes_only() {
        let flat: Vec<bool> = depthwise_geometries()
            .iter()
            .map(|g| FlatPlane::fits(g).is_some())
            .collect();
        let n = flat.len();
        assert_eq!(
            &flat[n - 2..],
            [false, false],
            "the two large planes take the row path"
        );
        assert!(flat[..n - 2].iter().all(|&f| f), "every other plane is flat");
    }

    #[test]
    fn direct_input_gradient_equals_the_definition() {
        for g in depthwise_geometries() {
            let grad_out = values(2 * 3 * g.output[0] * g.output[1], 1);
            let weight = values(3 * g.kernel[0] * g.kernel[1], 2);
            let naive = naive_input_grad(&grad_out, &weight, &g, g.channels_in);
            for simd in Simd::available() {
                assert_elementwise(&input_grad_f32_with(simd, &grad_out, &weight, &g), &naive, &g);
            }
        }
    }

    #[test]
    fn direct_forward_equals_the_definition() {
        for g in depthwise_geometries() {
            let ([ih, iw], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
            let x = values(2 * 3 * ih * iw, 1);
            let weight = values(3 * kh * kw, 2);
            let bias = values(3, 3);
            let mut naive = vec![0f32; 2 * 3 * oh * ow];
            for (plane, out) in naive.chunks_mut(oh * ow).enumerate() {
                let c = plane % 3;
                for (i, out) in out.iter_mut().enumerate() {
                    *out = bias[c];
                    for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
                        if let Some([iy, ix]) = input_position(&g, [i / ow, i % ow], [ky, kx]) {
                            *out += weight[(c * kh + ky) * kw + kx] * x[(plane * ih + iy) * iw + ix];
                        }
                    }
                }
            }
            for simd in Simd::available() {
                assert_elementwise(&forward_f32_with(simd, &x, &weight, &bias, &g), &naive, &g);
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
            ([6, 5], 3, 2, PaddingConfig2d::Explicit(0, 0, 1, 1), 1), // Lite0's stem
        ] {
            // Odd and even sides: with asymmetric padding only the even one pads at the end.
            for side in [13, 12] {
                let conv = conv_layer(channels, kernel, stride, padding.clone(), groups, &device);
                assert!(flex::options(&conv, &Tensor::zeros([1, 6, side, side], &device)).is_some());
                let x = Tensor::<4>::random([2, 6, side, side], Distribution::Uniform(-1.0, 1.0), &device);
                let upstream =
                    Tensor::<4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &device);
                let run = |direct: bool| {
                    let (y, x, grads) = forward_and_backward(&conv, &x, &upstream, direct);
                    let x_grad = x.grad(&grads).unwrap();
                    let w_grad = conv.weight.val().grad(&grads).unwrap();
                    let b_grad = conv.bias.as_ref().unwrap().val().grad(&grads).unwrap();
                    (y.inner(), x_grad, w_grad, b_grad)
                };
                let (y, x_grad, w_grad, b_grad) = run(true);
                let (y_ref, x_grad_ref, w_grad_ref, b_grad_ref) = run(false);
                let what = format!(
                    "{channels:?}, kernel {kernel}, stride {stride}, {padding:?}, groups {groups}, {side} px"
                );
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
        assert_same(
            forward(&grouped, input.clone()),
            grouped.forward(input.clone()),
            "uncovered layers pass through",
        );

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

    /// On the depthwise layers of EfficientNet-Lite0 (batch 2), the direct forward pass gives
    /// burn-flex's values bit for bit (taps in the same order, the bias last), and so does the
    /// input gradient: Lite0's reference tests compare input gradients through ReLU6, where a
    /// rounding difference can move an activation across a kink.
    #[test]
    fn lite0_depthwise_layers_are_burns_bit_for_bit() {
        let device = burn::tensor::Device::flex();
        let autodiff = device.clone().autodiff();
        // (channels, kernel, stride, padding (top, left, bottom, right), input side)
        for (channels, kernel, stride, [top, left, bottom, right], side) in [
            (32, 3, 1, [1, 1, 1, 1], 112),
            (96, 3, 2, [0, 0, 1, 1], 112),
            (144, 3, 1, [1, 1, 1, 1], 56),
            (144, 5, 2, [1, 1, 2, 2], 56),
            (240, 5, 1, [2, 2, 2, 2], 28),
            (240, 3, 2, [0, 0, 1, 1], 28),
            (480, 3, 1, [1, 1, 1, 1], 14),
            (672, 5, 2, [1, 1, 2, 2], 14),
            (1152, 5, 1, [2, 2, 2, 2], 7),
        ] {
            let padding = PaddingConfig2d::Explicit(top, left, bottom, right);
            let conv = depthwise_conv(channels, kernel, stride, padding, &device);
            let shape = [2, channels, side, side];
            let x = Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), &autodiff);
            let upstream =
                Tensor::<4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &autodiff);
            let run = |direct: bool| {
                let (y, x, grads) = forward_and_backward(&conv, &x, &upstream, direct);
                (y.inner().into_data(), x.grad(&grads).unwrap().into_data())
            };
            let what = format!("{channels} channels, {kernel}x{kernel}, stride {stride}, {side} px");
            let ((y, x_grad), (y_ref, x_grad_ref)) = (run(true), run(false));
            assert_eq!(y, y_ref, "{what}: output");
            assert_eq!(x_grad, x_grad_ref, "{what}: input gradient");
        }
    }
}
