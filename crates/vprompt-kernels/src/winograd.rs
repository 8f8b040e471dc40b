//! Dense 3 x 3, stride-1 convolutions (ResNets' main layers) by Winograd's minimal filtering
//! algorithm F(m x m, 3 x 3), forward and input gradient.
//!
//! Each m x m block of outputs (a tile) is computed from the (m + 2) x (m + 2) block of inputs
//! around it: the input blocks and the 3 x 3 kernels are transformed into (m + 2) x (m + 2) blocks
//! (`V = Bᵀ d B`, `U = G g Gᵀ`), multiplied elementwise and summed over channels, which for each
//! position `ξ` of the block is one matrix product (`M[ξ] = U[ξ] x V[ξ]`, `[c_out, c_in] x [c_in,
//! tiles]`), and each summed block is transformed back into its m x m outputs (`Y = Aᵀ M A`).
//! Per output and channel pair that is `(m + 2)² / m²` multiply-adds instead of im2col's 9: 4 for
//! F(2 x 2) ([`Variant::F2`]), 2.25 for F(4 x 4) ([`Variant::F4`]). Nor is there a 9x column
//! matrix to write and read (7.2 MiB per image on ResNet-18's 56 px layers, more than the L2
//! cache).
//!
//! F(4 x 4) also moves fewer transformed values per output, but has 36 kernel blocks per channel
//! pair against 16 and wastes more of its tiles on planes that are not a multiple of 4: on
//! ResNet-18's 512-channel 7 px layers it was 1.6x slower than F(2 x 2), on the 28 and 14 px ones
//! 1.2-1.35x faster (`conv_layers`). [`Variant::for_plane`] picks.
//!
//! The input gradient of such a layer is itself a stride-1 3 x 3 correlation, of the output
//! gradient with the kernels flipped and their channels swapped (padding `2 - p`), so both
//! directions share [`correlate`].
//!
//! Values differ from the direct sum by rounding only, but by more than its own, and in proportion
//! to the layer's largest value rather than each output's: the transforms scale by up to 8 (and
//! 1/24 in `G`). Against PyTorch in float64 (`tests/fallbacks.rs`), F(4 x 4) was within 3.4e-6 of
//! the largest value, F(2 x 2) 3.1e-7, the direct sum 1.9e-7; the tests here compare both variants
//! with the im2col kernel and the definition at 1e-5 of the largest value.

use rayon::prelude::*;

use super::dense::{Matrix, gemm_into};
use super::{Geometry, Simd};

/// Tiles per block: the unit of the matrix products. A block's transformed inputs and products
/// (`(m + 2)² * (c_in + c_out)` floats per tile) then stay in or near the L2 cache. Measured on
/// ResNet-18's four 3 x 3 shapes at batch 32: blocks of 64 or 256 F(2 x 2) tiles were 5-30 %
/// slower than 128, whole images (784 tiles at 56 px) slower still; for F(4 x 4), 64 and 128 were
/// level, 32 and 16 slower.
const BLOCK_TILES: usize = 128;

/// Output planes with both sides at least this long take F(4 x 4), smaller ones F(2 x 2).
const F4_PLANE: usize = 12;

/// Whether a dense convolution goes through Winograd: a 3 x 3 kernel, stride and dilation 1,
/// padding of at most 2 before (so that the input gradient's `2 - p` exists), and enough channels
/// on both sides for the products to be matrix products worth the transforms.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.pad_begin.iter().all(|&p| p <= 2)
        && g.channels_in >= MIN_CHANNELS
        && g.channels_out >= MIN_CHANNELS
        && g.output.iter().all(|&s| s > 0)
        && g.input.iter().all(|&s| s > 0)
}

/// Fewest channels on either side for [`applies`].
const MIN_CHANNELS: usize = 16;

/// The forward pass of a layer that [`applies`]: as [`super::dense::forward_f32`].
pub(crate) fn forward_f32(input: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    forward_with(
        input,
        weight,
        bias,
        g,
        Variant::for_plane(g.output),
        threads,
        BLOCK_TILES,
    )
}

/// [`forward_f32`] with the variant, the thread count and the block size as parameters (the tests
/// reach every path with them).
fn forward_with(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    variant: Variant,
    threads: usize,
    block_tiles: usize,
) -> Vec<f32> {
    let (c_in, c_out) = (g.channels_in, g.channels_out);
    let c = Correlation::new(g.batch, [c_in, c_out], g.input, g.output, g.pad_begin, variant);
    let u = transformed_kernels(variant, c_out, c_in, |o, i| {
        <[f32; 9]>::try_from(&weight[(o * c_in + i) * 9..][..9]).expect("9 taps")
    });
    correlate(input, &u, bias, &c, threads, block_tiles)
}

/// The input gradient of a layer that [`applies`]: as [`super::dense::input_grad_f32`].
pub(crate) fn input_grad_f32(grad_out: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    input_grad_with(
        grad_out,
        weight,
        g,
        Variant::for_plane(g.input),
        threads,
        BLOCK_TILES,
    )
}

/// [`input_grad_f32`] with the variant, the thread count and the block size as parameters.
fn input_grad_with(
    grad_out: &[f32],
    weight: &[f32],
    g: &Geometry,
    variant: Variant,
    threads: usize,
    block_tiles: usize,
) -> Vec<f32> {
    let (c_in, c_out) = (g.channels_in, g.channels_out);
    let pad = [2 - g.pad_begin[0], 2 - g.pad_begin[1]];
    let c = Correlation::new(g.batch, [c_out, c_in], g.output, g.input, pad, variant);
    // Kernel (i, o) of the gradient's correlation is (o, i)'s, flipped on both axes.
    let u = transformed_kernels(variant, c_in, c_out, |i, o| {
        let g = &weight[(o * c_in + i) * 9..][..9];
        [g[8], g[7], g[6], g[5], g[4], g[3], g[2], g[1], g[0]]
    });
    correlate(grad_out, &u, None, &c, threads, block_tiles)
}

/// F(m x m, 3 x 3) for one tile size m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// F(2 x 2, 3 x 3): 4 x 4 blocks.
    F2,
    /// F(4 x 4, 3 x 3): 6 x 6 blocks.
    F4,
}

impl Variant {
    /// The variant for a destination plane (see [`F4_PLANE`]).
    fn for_plane(dst: [usize; 2]) -> Self {
        if dst.iter().all(|&side| side >= F4_PLANE) {
            Variant::F4
        } else {
            Variant::F2
        }
    }

    /// Outputs per tile side, `m`.
    fn out(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }

    /// Inputs per tile side, `m + 2`: a transformed block's side.
    fn span(self) -> usize {
        self.out() + 2
    }

    /// Positions of a transformed block, one matrix product each.
    fn positions(self) -> usize {
        self.span() * self.span()
    }

    /// `G g` along one axis: the 3 kernel taps to the block's [`span`](Self::span) positions
    /// (the rest 0).
    fn kernel(self, [g0, g1, g2]: [f32; 3]) -> [f32; 6] {
        match self {
            // G's rows: [1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1].
            Variant::F2 => [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2, 0.0, 0.0],
            // G's rows: [1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
            // [1/24, -1/12, 1/6], [0, 0, 1].
            Variant::F4 => [
                g0 / 4.0,
                -(g0 + g1 + g2) / 6.0,
                -(g0 - g1 + g2) / 6.0,
                g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
                g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
                g2,
            ],
        }
    }

    /// `t = Bᵀ d` for the first `n` columns of the [`span`](Self::span) rows `d`: row `i` of the
    /// result goes to `t[i * stride..][..n]`.
    #[inline(always)]
    fn input(self, d: &[&[f32]], t: &mut [f32], stride: usize, n: usize) {
        match self {
            Variant::F2 => {
                let mut rows = t.chunks_mut(stride);
                let (t0, t1) = (next_row(&mut rows, n), next_row(&mut rows, n));
                let (t2, t3) = (next_row(&mut rows, n), next_row(&mut rows, n));
                b_transposed_2([&d[0][..n], &d[1][..n], &d[2][..n], &d[3][..n]], t0, t1, t2, t3);
            }
            Variant::F4 => {
                let mut rows = t.chunks_mut(stride);
                let (t0, t1, t2) = (
                    next_row(&mut rows, n),
                    next_row(&mut rows, n),
                    next_row(&mut rows, n),
                );
                let (t3, t4, t5) = (
                    next_row(&mut rows, n),
                    next_row(&mut rows, n),
                    next_row(&mut rows, n),
                );
                b_transposed_4(six(|i| &d[i][..n]), t0, t1, t2, t3, t4, t5);
            }
        }
    }

    /// `y = Aᵀ m + bias` for the first `n` columns of the [`span`](Self::span) rows `m`: row `r`
    /// of the result goes to `y[r * stride..][..n]`.
    #[inline(always)]
    fn output(self, m: &[&[f32]], bias: f32, y: &mut [f32], stride: usize, n: usize) {
        match self {
            Variant::F2 => {
                let mut rows = y.chunks_mut(stride);
                let (y0, y1) = (next_row(&mut rows, n), next_row(&mut rows, n));
                a_transposed_2([&m[0][..n], &m[1][..n], &m[2][..n], &m[3][..n]], bias, y0, y1);
            }
            Variant::F4 => {
                let mut rows = y.chunks_mut(stride);
                let (y0, y1) = (next_row(&mut rows, n), next_row(&mut rows, n));
                let (y2, y3) = (next_row(&mut rows, n), next_row(&mut rows, n));
                a_transposed_4(six(|i| &m[i][..n]), bias, y0, y1, y2, y3);
            }
        }
    }
}

/// The next of `rows`, cut to `n` values.
#[inline(always)]
fn next_row<'a>(rows: &mut std::slice::ChunksMut<'a, f32>, n: usize) -> &'a mut [f32] {
    &mut rows.next().expect("as many rows as the block's side")[..n]
}

/// `[f(0), f(1), .., f(5)]`, built in place. `std::array::from_fn` stayed a call out of the
/// transforms' AVX-512 code, with a `vzeroupper` and a reload of the array every time: a third of
/// a transform's samples.
#[inline(always)]
fn six<T>(f: impl Fn(usize) -> T) -> [T; 6] {
    [f(0), f(1), f(2), f(3), f(4), f(5)]
}

/// F(2 x 2)'s `t = Bᵀ d`, `Bᵀ`'s rows `[1, 0, -1, 0]`, `[0, 1, 1, 0]`, `[0, -1, 1, 0]`, `[0, 1, 0,
/// -1]`. The outputs are separate arguments so that the compiler knows they do not overlap, and
/// vectorises (the same for the three functions below).
#[inline(always)]
fn b_transposed_2(d: [&[f32]; 4], t0: &mut [f32], t1: &mut [f32], t2: &mut [f32], t3: &mut [f32]) {
    let n = t0.len();
    let (t1, t2, t3) = (&mut t1[..n], &mut t2[..n], &mut t3[..n]);
    let (d0, d1, d2, d3) = (&d[0][..n], &d[1][..n], &d[2][..n], &d[3][..n]);
    for k in 0..n {
        t0[k] = d0[k] - d2[k];
        t1[k] = d1[k] + d2[k];
        t2[k] = d2[k] - d1[k];
        t3[k] = d1[k] - d3[k];
    }
}

/// F(4 x 4)'s `t = Bᵀ d`, `Bᵀ`'s rows `[4, 0, -5, 0, 1, 0]`, `[0, -4, -4, 1, 1, 0]`, `[0, 4, -4,
/// -1, 1, 0]`, `[0, -2, -1, 2, 1, 0]`, `[0, 2, -1, -2, 1, 0]`, `[0, 4, 0, -5, 0, 1]`.
#[allow(clippy::too_many_arguments)] // the six rows
#[inline(always)]
fn b_transposed_4(
    d: [&[f32]; 6],
    t0: &mut [f32],
    t1: &mut [f32],
    t2: &mut [f32],
    t3: &mut [f32],
    t4: &mut [f32],
    t5: &mut [f32],
) {
    let n = t0.len();
    let (t1, t2, t3, t4, t5) = (
        &mut t1[..n],
        &mut t2[..n],
        &mut t3[..n],
        &mut t4[..n],
        &mut t5[..n],
    );
    let (d0, d1, d2, d3, d4, d5) = (
        &d[0][..n],
        &d[1][..n],
        &d[2][..n],
        &d[3][..n],
        &d[4][..n],
        &d[5][..n],
    );
    for k in 0..n {
        t0[k] = 4.0 * d0[k] - 5.0 * d2[k] + d4[k];
        t1[k] = d3[k] + d4[k] - 4.0 * (d1[k] + d2[k]);
        t2[k] = d4[k] - d3[k] + 4.0 * (d1[k] - d2[k]);
        t3[k] = d4[k] - d2[k] + 2.0 * (d3[k] - d1[k]);
        t4[k] = d4[k] - d2[k] + 2.0 * (d1[k] - d3[k]);
        t5[k] = 4.0 * d1[k] - 5.0 * d3[k] + d5[k];
    }
}

/// F(2 x 2)'s `y = Aᵀ m + bias`, `Aᵀ`'s rows `[1, 1, 1, 0]`, `[0, 1, -1, -1]`.
#[inline(always)]
fn a_transposed_2(m: [&[f32]; 4], bias: f32, y0: &mut [f32], y1: &mut [f32]) {
    let n = y0.len();
    let y1 = &mut y1[..n];
    let (m0, m1, m2, m3) = (&m[0][..n], &m[1][..n], &m[2][..n], &m[3][..n]);
    for k in 0..n {
        y0[k] = m0[k] + m1[k] + m2[k] + bias;
        y1[k] = m1[k] - m2[k] - m3[k] + bias;
    }
}

/// F(4 x 4)'s `y = Aᵀ m + bias`, `Aᵀ`'s rows `[1, 1, 1, 1, 1, 0]`, `[0, 1, -1, 2, -2, 0]`, `[0,
/// 1, 1, 4, 4, 0]`, `[0, 1, -1, 8, -8, 1]`.
#[inline(always)]
fn a_transposed_4(m: [&[f32]; 6], bias: f32, y0: &mut [f32], y1: &mut [f32], y2: &mut [f32], y3: &mut [f32]) {
    let n = y0.len();
    let (y1, y2, y3) = (&mut y1[..n], &mut y2[..n], &mut y3[..n]);
    let (m0, m1, m2, m3, m4, m5) = (
        &m[0][..n],
        &m[1][..n],
        &m[2][..n],
        &m[3][..n],
        &m[4][..n],
        &m[5][..n],
    );
    for k in 0..n {
        let (sum12, diff12) = (m1[k] + m2[k], m1[k] - m2[k]);
        let (sum34, diff34) = (m3[k] + m4[k], m3[k] - m4[k]);
        y0[k] = m0[k] + sum12 + sum34 + bias;
        y1[k] = diff12 + 2.0 * diff34 + bias;
        y2[k] = sum12 + 4.0 * sum34 + bias;
        y3[k] = diff12 + 8.0 * diff34 + m5[k] + bias;
    }
}

/// A stride-1 3 x 3 correlation, `dst[n, o, y, x] = bias[o] + sum_{i, ky, kx} kernel[o, i, ky,
/// kx] * src[n, i, y + ky - pad_y, x + kx - pad_x]` (reads outside `src` being 0), and the
/// variant it runs with.
#[derive(Debug, Clone, Copy)]
struct Correlation {
    batch: usize,
    src_channels: usize,
    dst_channels: usize,
    /// `src`'s plane `[height, width]`.
    src: [usize; 2],
    /// `dst`'s plane `[height, width]`.
    dst: [usize; 2],
    pad: [usize; 2],
    variant: Variant,
}

impl Correlation {
    /// The correlation of `[batch, channels[0], src]` into `[batch, channels[1], dst]`.
    fn new(
        batch: usize,
        channels: [usize; 2],
        src: [usize; 2],
        dst: [usize; 2],
        pad: [usize; 2],
        variant: Variant,
    ) -> Self {
        Self {
            batch,
            src_channels: channels[0],
            dst_channels: channels[1],
            src,
            dst,
            pad,
            variant,
        }
    }

    /// Tiles per image `[rows, columns]`, the last row and column of tiles overhanging a plane
    /// whose side is not a multiple of the tile's.
    fn tiles(&self) -> [usize; 2] {
        self.dst.map(|side| side.div_ceil(self.variant.out()))
    }

    /// Images per group, a parallel task: enough for a block of [`BLOCK_TILES`] tiles, evened out
    /// so that each thread's share of the batch splits into equal groups.
    fn images_per_group(&self, threads: usize) -> usize {
        let [th, tw] = self.tiles();
        let wanted = BLOCK_TILES.div_ceil((th * tw).max(1));
        crate::images_per_group(self.batch, threads, wanted)
    }

    /// Rows of tiles per block, for `rows` rows of tiles in all: about `block_tiles` tiles, the
    /// rows split evenly between the blocks.
    fn block_rows(&self, rows: usize, block_tiles: usize) -> usize {
        let wanted = (block_tiles / self.tiles()[1].max(1)).max(1);
        rows.div_ceil(rows.div_ceil(wanted).max(1)).max(1)
    }
}

/// The transformed kernels `U = G g Gᵀ` of every (destination, source) channel pair, laid out
/// `[dst_channels, positions, src_channels]` (position `ξ = a * span + b` of the block in the
/// middle, so that each destination channel's values are one contiguous run written by one task),
/// from `kernel(d, s)`, the pair's 3 x 3 values row-major.
fn transformed_kernels(
    variant: Variant,
    dst_channels: usize,
    src_channels: usize,
    kernel: impl Fn(usize, usize) -> [f32; 9] + Sync,
) -> Vec<f32> {
    let span = variant.span();
    let per_dst = variant.positions() * src_channels;
    crate::written(
        dst_channels * per_dst,
        per_dst.max(1),
        || (vec![0f32; per_dst], vec![[[0f32; 6]; 3]; src_channels]),
        |(block, columns), d, out| {
            // G g (span x 3) of every source channel, column by column...
            for (s, column) in columns.iter_mut().enumerate() {
                let g = kernel(d, s);
                *column = [
                    variant.kernel([g[0], g[3], g[6]]),
                    variant.kernel([g[1], g[4], g[7]]),
                    variant.kernel([g[2], g[5], g[8]]),
                ];
            }
            // ...then (G g) Gᵀ, a block row at a time: `span` output streams rather than
            // `span²`, which (36 of them, `4 * src_channels` bytes apart) thrashed the L1 cache.
            for a in 0..span {
                for (s, column) in columns.iter().enumerate() {
                    let row = variant.kernel([column[0][a], column[1][a], column[2][a]]);
                    for (b, &value) in row[..span].iter().enumerate() {
                        block[(a * span + b) * src_channels + s] = value;
                    }
                }
            }
            out.write(block);
        },
    )
}

/// Per-task buffers of [`correlate`], reused across its groups.
#[derive(Default)]
struct Scratch {
    /// One block's transformed inputs `[positions, src_channels, block tiles]`.
    v: Vec<f32>,
    /// One block's products `[positions, dst_channels, block tiles]`.
    m: Vec<f32>,
    /// One source plane's rows split into column phases (see [`split_plane`]).
    split: Vec<f32>,
    /// One padded source row, then (F(4 x 4)) its even and its odd columns, as pairs of floats.
    pairs: [Vec<u64>; 3],
    /// The transforms' intermediate rows or planes.
    rows: Vec<f32>,
}

/// Runs `c` on `src` (`[batch, src_channels, src_h, src_w]`) with the transformed kernels `u`
/// (`[dst_channels, positions, src_channels]`); returns `[batch, dst_channels, dst_h, dst_w]`.
/// Groups of images run in parallel, each in blocks of about `block_tiles` tiles ([`BLOCK_TILES`];
/// the tests use small blocks to split images).
fn correlate(
    src: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    c: &Correlation,
    threads: usize,
    block_tiles: usize,
) -> Vec<f32> {
    let src_image = c.src_channels * c.src[0] * c.src[1];
    let dst_image = c.dst_channels * c.dst[0] * c.dst[1];
    debug_assert_eq!(src.len(), c.batch * src_image);
    debug_assert_eq!(u.len(), c.dst_channels * c.variant.positions() * c.src_channels);
    let mut dst = crate::zeroed(c.batch * dst_image);
    let group = c.images_per_group(threads);
    let groups = c.batch.div_ceil(group);
    // Fewer groups than threads (a small batch): the products use every thread instead.
    let parallelism = if groups < threads {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let pairs = dst
        .par_chunks_mut(group * dst_image)
        .zip(src.par_chunks(group * src_image));
    pairs.for_each_init(Scratch::default, |scratch, (out, images)| {
        correlate_group(images, u, bias, c, block_tiles, scratch, out, parallelism)
    });
    dst
}

/// One group of [`correlate`], `images` `[n, src_channels, src_h, src_w]` into `out` `[n,
/// dst_channels, dst_h, dst_w]`, a block of rows of tiles at a time (see [`Correlation::block_rows`]).
#[allow(clippy::too_many_arguments)] // the pieces of one call, named
fn correlate_group(
    images: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    c: &Correlation,
    block_tiles: usize,
    scratch: &mut Scratch,
    out: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    let [th, tw] = c.tiles();
    let (m, span, positions) = (c.variant.out(), c.variant.span(), c.variant.positions());
    let (src_plane, dst_plane) = (c.src[0] * c.src[1], c.dst[0] * c.dst[1]);
    let (cs, cd) = (c.src_channels, c.dst_channels);
    let n = images.len() / (cs * src_plane).max(1);
    let block = c.block_rows(n * th, block_tiles);
    let line = m * (tw + 1); // a padded row: `m` column phases of `tw + 1`
    scratch.split.resize((m * block + 2) * line, 0.0);
    for (pairs, len) in scratch.pairs.iter_mut().zip([line / 2, tw + 1, tw + 1]) {
        pairs.resize(len, 0);
    }
    scratch
        .rows
        .resize((span * line).max((span + m) * m * block * tw), 0.0);
    let simd = Simd::detect();
    for first in (0..n * th).step_by(block) {
        let end = (first + block).min(n * th);
        let tiles = (end - first) * tw;
        // The images the block's rows of tiles belong to: image `j`'s rows `rows` start at
        // column `at` of the block's matrices.
        let parts = (first / th..end.div_ceil(th)).map(|j| {
            let rows = first.max(j * th) - j * th..end.min((j + 1) * th) - j * th;
            (j, (j * th + rows.start - first) * tw, rows)
        });
        scratch.v.resize(positions * cs * tiles, 0.0);
        scratch.m.resize(positions * cd * tiles, 0.0);
        simd.run(
            #[inline(always)]
            || {
                for (j, at, rows) in parts.clone() {
                    for s in 0..cs {
                        let plane = &images[(j * cs + s) * src_plane..][..src_plane];
                        split_plane(plane, c, rows.clone(), &mut scratch.split, &mut scratch.pairs);
                        let (v, base) = (&mut scratch.v, s * tiles + at);
                        transform_input(
                            &scratch.split,
                            c,
                            rows.len(),
                            v,
                            base,
                            cs * tiles,
                            &mut scratch.rows,
                        );
                    }
                }
            },
        );
        for xi in 0..positions {
            let lhs = Matrix::rows(&u[xi * cs..], positions * cs);
            let rhs = Matrix::rows(&scratch.v[xi * cs * tiles..(xi + 1) * cs * tiles], tiles);
            let product = &mut scratch.m[xi * cd * tiles..(xi + 1) * cd * tiles];
            gemm_into(product, tiles, 0, tiles, lhs, cs, rhs, false, cd, parallelism);
        }
        simd.run(
            #[inline(always)]
            || {
                for (j, at, rows) in parts.clone() {
                    for o in 0..cd {
                        let b = bias.map_or(0.0, |b| b[o]);
                        let plane = &mut out[(j * cd + o) * dst_plane..][..dst_plane];
                        let (products, rows_of) = (&scratch.m[o * tiles + at..], rows.clone());
                        transform_output(products, c, rows_of, cd * tiles, b, &mut scratch.rows, plane);
                    }
                }
            },
        );
    }
}

/// Splits rows of tiles `rows` of one source plane into `split` `[m * rows.len() + 2, m, tiles_w +
/// 1]` (`m` outputs per tile side): for every padded row `Y` in `m * rows.start..m * rows.end + 2`
/// (source row `Y - pad_y`, zeros outside the plane), its values at padded columns `X = m * k + p`
/// (source column `X - pad_x`, zeros outside), phase `p` by phase. Tile `(ty, tx)` reads padded
/// rows and columns `m * t..m * t + m + 2`; its columns are then phases `0..m` at `tx` and phases 0
/// and 1 at `tx + 1`, contiguous across a row of tiles. `pairs` is scratch of `m * (tiles_w + 1)
/// / 2`, `tiles_w + 1` and `tiles_w + 1` pairs.
#[inline(always)]
fn split_plane(
    plane: &[f32],
    c: &Correlation,
    rows: std::ops::Range<usize>,
    split: &mut [f32],
    pairs: &mut [Vec<u64>; 3],
) {
    let (m, q) = (c.variant.out(), c.tiles()[1] + 1);
    let [h, w] = c.src;
    let [py, px] = c.pad;
    let line = m * q;
    // The padded row as pairs of floats in one `u64` each (F(4 x 4): then its even and its odd
    // columns again as pairs): splitting pairs is a truncation and a shift, which vectorise
    // (strided gathers of floats did not).
    let [padded, evens, odds] = pairs;
    let (padded, evens, odds) = (&mut padded[..line / 2], &mut evens[..q], &mut odds[..q]);
    // The padded row's source columns: `px..px + w`, cut at the row's end (the last tile
    // overhangs the plane, or the padding after is smaller than `2 - px`).
    let inside = px.min(line)..(px + w).min(line);
    {
        let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut *padded);
        flat[..inside.start].fill(0.0);
        flat[inside.end..].fill(0.0);
    }
    let padded_rows = m * rows.start..m * rows.end + 2;
    for (y, phases) in padded_rows.zip(split.chunks_exact_mut(line)) {
        if y < py || y - py >= h {
            phases.fill(0.0);
            continue;
        }
        let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut *padded);
        flat[inside.clone()].copy_from_slice(&plane[(y - py) * w..][..inside.len()]);
        let (p0, rest) = phases.split_at_mut(q);
        if m == 2 {
            unzip_pairs(padded, p0, rest);
            continue;
        }
        {
            let (even, odd): (&mut [f32], &mut [f32]) = (
                bytemuck::cast_slice_mut(&mut *evens),
                bytemuck::cast_slice_mut(&mut *odds),
            );
            unzip_pairs(padded, even, odd);
        }
        let (p1, rest) = rest.split_at_mut(q);
        let (p2, p3) = rest.split_at_mut(q);
        unzip_pairs(evens, p0, p2); // columns 4k and 4k + 2
        unzip_pairs(odds, p1, p3); // columns 4k + 1 and 4k + 3
    }
}

/// Splits each pair of floats of `pairs` (the first at the lower address) into `first` and
/// `second`, as long as `pairs`.
#[inline(always)]
fn unzip_pairs(pairs: &[u64], first: &mut [f32], second: &mut [f32]) {
    let n = pairs.len();
    let (first, second) = (&mut first[..n], &mut second[..n]);
    for k in 0..n {
        let (low, high) = (pairs[k] as u32, (pairs[k] >> 32) as u32);
        let (a, b) = if cfg!(target_endian = "little") {
            (low, high)
        } else {
            (high, low)
        };
        first[k] = f32::from_bits(a);
        second[k] = f32::from_bits(b);
    }
}

/// The transformed rows of tiles `V = Bᵀ d B` of one source channel's `count` rows of tiles, from
/// their [`split_plane`]: row of tiles `ty`'s position `ξ` goes to `v[ξ * xi_stride + base + ty *
/// tiles_w..][..tiles_w]`. `rows` is scratch of `span * m * (tiles_w + 1)`.
#[inline(always)]
fn transform_input(
    split: &[f32],
    c: &Correlation,
    count: usize,
    v: &mut [f32],
    base: usize,
    xi_stride: usize,
    rows: &mut [f32],
) {
    let (m, span) = (c.variant.out(), c.variant.span());
    let tw = c.tiles()[1];
    let q = tw + 1;
    let line = m * q; // a padded row's `m` phases
    for ty in 0..count {
        // `Bᵀ d` down the columns: the block's padded rows, all phases at once.
        let d = six(|i| &split[(m * ty + i.min(span - 1)) * line..][..line]); // F(2 x 2) uses the first 4
        c.variant.input(&d[..span], rows, line, line);
        // Then `(Bᵀ d) B` along each row: a tile's columns are phases `0..m` at `tx`, phases 0
        // and 1 at `tx + 1`.
        let at = base + ty * tw;
        for i in 0..span {
            let t = &rows[i * line..][..line];
            let columns = six(|x| {
                let x = x.min(span - 1); // F(2 x 2) uses the first 4
                let (phase, next) = if x < m { (x, 0) } else { (x - m, 1) };
                &t[phase * q + next..][..tw]
            });
            c.variant.input(
                &columns[..span],
                &mut v[i * span * xi_stride + at..],
                xi_stride,
                tw,
            );
        }
    }
}

/// Rows of tiles `rows` of one destination channel back into outputs `Y = Aᵀ M A + bias`, written
/// into their rows of `plane` (`[dst_h, dst_w]`); `products[ξ * xi_stride..][..rows.len() *
/// tiles_w]` holds the tiles' position `ξ`. `corners` is scratch of `(span + m) * m * rows.len() *
/// tiles_w`.
#[inline(always)]
fn transform_output(
    products: &[f32],
    c: &Correlation,
    rows: std::ops::Range<usize>,
    xi_stride: usize,
    bias: f32,
    corners: &mut [f32],
    plane: &mut [f32],
) {
    let (m, span) = (c.variant.out(), c.variant.span());
    let tw = c.tiles()[1];
    let [h, w] = c.dst;
    let tiles = rows.len() * tw;
    let (sums, outputs) = corners[..(span + m) * m * tiles].split_at_mut(span * m * tiles);
    // `Aᵀ M` down the columns of each tile: `sums[m * b + r]` is output row `r` at block column
    // `b`...
    for b in 0..span {
        let column: [&[f32]; 6] = six(|a| &products[(a.min(span - 1) * span + b) * xi_stride..][..tiles]);
        c.variant
            .output(&column[..span], 0.0, &mut sums[m * b * tiles..], tiles, tiles);
    }
    // ...then `(Aᵀ M) A` along the rows: `outputs[m * r + x]` is output `(r, x)` of every tile.
    for r in 0..m {
        let row = six(|b| &sums[(m * b.min(span - 1) + r) * tiles..][..tiles]);
        c.variant
            .output(&row[..span], bias, &mut outputs[m * r * tiles..], tiles, tiles);
    }
    let whole = w / m; // tiles whose `m` columns are all inside the plane
    for (i, ty) in rows.enumerate() {
        for r in 0..m {
            let y = m * ty + r;
            if y >= h {
                break;
            }
            let at = |x: usize| &outputs[(m * r + x) * tiles + i * tw..][..tw];
            let out = &mut plane[y * w..][..w];
            if m == 2 {
                let (x0, x1) = (at(0), at(1));
                for (k, two) in out.chunks_exact_mut(2).enumerate().take(whole) {
                    two.copy_from_slice(&[x0[k], x1[k]]);
                }
            } else {
                let (x0, x1, x2, x3) = (at(0), at(1), at(2), at(3));
                for (k, four) in out.chunks_exact_mut(4).enumerate().take(whole) {
                    four.copy_from_slice(&[x0[k], x1[k], x2[k], x3[k]]);
                }
            }
            for (x, value) in out[m * whole..].iter_mut().enumerate() {
                *value = at(x)[whole];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense;
    use crate::test_values::{naive_input_grad, out_size, values};

    /// 3 x 3 stride-1 geometries: planes of every size modulo 4, every padding from 0 to 2
    /// (asymmetric too), planes smaller than a tile, planes that take F(4 x 4).
    fn geometries() -> Vec<Geometry> {
        let cases = [
            ((16, 16), [9, 9], [(1, 1), (1, 1)]),
            ((17, 20), [8, 11], [(1, 1), (1, 1)]),
            ((16, 18), [7, 6], [(0, 0), (2, 2)]),
            ((20, 16), [6, 7], [(2, 1), (0, 2)]),
            ((16, 16), [2, 3], [(1, 1), (1, 1)]),
            ((18, 16), [5, 5], [(0, 0), (0, 0)]),
            ((16, 17), [14, 13], [(1, 1), (1, 1)]),
            ((16, 16), [12, 15], [(0, 2), (2, 0)]),
        ];
        let mut geometries = Vec::new();
        for ((channels_in, channels_out), input, padding) in cases {
            let output = [0, 1].map(|a| out_size(input[a], 3, 1, 1, padding[a]));
            for batch in [1, 3, 7] {
                geometries.push(Geometry {
                    batch,
                    channels_in,
                    channels_out,
                    input,
                    output,
                    kernel: [3, 3],
                    stride: [1, 1],
                    dilation: [1, 1],
                    pad_begin: [padding[0].0, padding[1].0],
                });
            }
        }
        geometries
    }

    /// `(threads, block tiles)`: one group of the whole batch or several, parallel gemms (more
    /// threads than groups), and blocks that split images and rows of tiles.
    const PATHS: [(usize, usize); 5] = [
        (1, BLOCK_TILES),
        (2, BLOCK_TILES),
        (4, BLOCK_TILES),
        (1, 1),
        (2, 7),
    ];

    fn assert_close(got: &[f32], expected: &[f32], what: &str) {
        assert_eq!(got.len(), expected.len(), "{what}");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-5 * scale,
                "{what}: [{i}] {a} vs {e} (largest {scale})"
            );
        }
    }

    #[test]
    fn forward_equals_the_definition() {
        for g in geometries() {
            assert!(applies(&g), "{g:?}");
            let x = values(g.batch * g.channels_in * g.input[0] * g.input[1], 1);
            let w = values(g.channels_out * g.channels_in * 9, 2);
            let b = values(g.channels_out, 3);
            for bias in [Some(&b[..]), None] {
                // The im2col path, itself tested against the definition in `dense`.
                let expected = dense::forward_f32_with(&x, &w, bias, &g, dense::COLUMN_LIMIT, 1);
                for variant in [Variant::F2, Variant::F4] {
                    for (threads, block_tiles) in PATHS {
                        let got = forward_with(&x, &w, bias, &g, variant, threads, block_tiles);
                        let what = format!(
                            "{g:?} bias {} {variant:?} threads {threads} block {block_tiles}",
                            bias.is_some()
                        );
                        assert_close(&got, &expected, &what);
                    }
                }
                assert_close(&forward_f32(&x, &w, bias, &g), &expected, &format!("{g:?}"));
            }
        }
    }

    #[test]
    fn input_gradient_equals_the_definition() {
        for g in geometries() {
            let grad_out = values(g.batch * g.channels_out * g.output[0] * g.output[1], 4);
            let w = values(g.channels_out * g.channels_in * 9, 5);
            let expected = naive_input_grad(&grad_out, &w, &g, 1);
            for variant in [Variant::F2, Variant::F4] {
                for (threads, block_tiles) in PATHS {
                    let got = input_grad_with(&grad_out, &w, &g, variant, threads, block_tiles);
                    let what = format!("{g:?} {variant:?} threads {threads} block {block_tiles}");
                    assert_close(&got, &expected, &what);
                }
            }
            assert_close(&input_grad_f32(&grad_out, &w, &g), &expected, &format!("{g:?}"));
        }
    }

    #[test]
    fn only_dense_three_by_three_stride_one_layers_apply() {
        let layer = geometries()[0];
        assert!(applies(&layer));
        assert!(!applies(&Geometry {
            stride: [2, 2],
            ..layer
        }));
        assert!(!applies(&Geometry {
            kernel: [5, 5],
            ..layer
        }));
        assert!(!applies(&Geometry {
            dilation: [2, 2],
            ..layer
        }));
        assert!(!applies(&Geometry {
            pad_begin: [3, 1],
            ..layer
        }));
        assert!(!applies(&Geometry {
            channels_in: 3,
            ..layer
        }));
    }

    #[test]
    fn planes_from_12_px_take_f4() {
        assert_eq!(Variant::for_plane([56, 56]), Variant::F4);
        assert_eq!(Variant::for_plane([12, 14]), Variant::F4);
        assert_eq!(Variant::for_plane([7, 7]), Variant::F2);
        assert_eq!(Variant::for_plane([56, 11]), Variant::F2);
    }

    #[test]
    fn groups_and_blocks_hold_about_a_block_of_tiles() {
        let layer4 = Correlation::new(32, [512, 512], [7, 7], [7, 7], [1, 1], Variant::F2);
        // 16 tiles per image: 8 images make a block; a thread's 16 split into 2 groups.
        assert_eq!(layer4.images_per_group(2), 8);
        assert_eq!(
            layer4.block_rows(8 * 4, BLOCK_TILES),
            32,
            "8 images' 4 rows of 4 tiles"
        );
        assert_eq!(Correlation { batch: 3, ..layer4 }.images_per_group(2), 2);
        let layer1 = Correlation::new(32, [64, 64], [56, 56], [56, 56], [1, 1], Variant::F4);
        assert_eq!(layer1.tiles(), [14, 14]);
        assert_eq!(layer1.images_per_group(2), 1, "196 tiles");
        assert_eq!(
            layer1.block_rows(14, BLOCK_TILES),
            7,
            "2 blocks of 7 rows of 14 tiles"
        );
        let layer2 = Correlation {
            variant: Variant::F2,
            ..layer1
        };
        assert_eq!(
            layer2.block_rows(28, BLOCK_TILES),
            4,
            "7 blocks of 4 rows of 28 tiles"
        );
        assert_eq!(layer2.block_rows(28, 1), 1);
    }
}
