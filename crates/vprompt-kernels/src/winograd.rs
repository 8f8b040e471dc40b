//! Dense 3 x 3, stride-1 convolutions (ResNets' main layers) by Winograd's minimal filtering
//! algorithm F(2 x 2, 3 x 3), forward and input gradient.
//!
//! Each 2 x 2 block of outputs (a tile) is computed from a 4 x 4 block of inputs with 16
//! multiplications per channel pair instead of im2col's 36: the input blocks and the 3 x 3 kernels
//! are transformed into 4 x 4 blocks (`V = Bᵀ d B`, `U = G g Gᵀ`), multiplied elementwise and summed
//! over channels, which for each of the 16 positions of the block is one matrix product
//! (`M[ξ] = U[ξ] x V[ξ]`, `[c_out, c_in] x [c_in, tiles]`), and each summed block is transformed
//! back into its 2 x 2 outputs (`Y = Aᵀ M A`). The 16 products do 2.25x fewer multiply-adds than
//! im2col's one, and read no 9x column matrix (7.2 MiB per image on ResNet-18's 56 px layers,
//! more than the L2 cache).
//!
//! The input gradient of such a layer is itself a stride-1 3 x 3 correlation, of the output
//! gradient with the kernels flipped and their channels swapped (padding `2 - p`), so both
//! directions share [`correlate`].
//!
//! Values differ from the direct sum by rounding only: the transforms add and subtract, with
//! factors 1/2 in `G`, so the error stays within a few ulp of the sum's magnitude (the tests
//! compare with the definition at 1e-5).

use rayon::prelude::*;

use super::dense::{Matrix, gemm_into};
use super::{Geometry, Simd};

/// Tiles per block: the unit of the 16 matrix products. A block's transformed inputs and
/// products (`16 * (c_in + c_out)` floats per tile) then stay in the L2 cache for ResNet-18's 64-
/// and 128-channel layers. Measured on ResNet-18's four 3 x 3 shapes at batch 32 (forward):
/// blocks of 64 or 256 tiles were 5-30 % slower than 128, and whole images (784 tiles at 56 px)
/// slower still.
const BLOCK_TILES: usize = 128;

/// Whether a dense convolution goes through Winograd: a 3 x 3 kernel, stride and dilation 1,
/// padding of at most 2 before (so that the input gradient's `2 - p` exists), and enough channels
/// on both sides for the 16 products to be matrix products worth the transforms.
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
    let (c_in, c_out) = (g.channels_in, g.channels_out);
    let u = transformed_kernels(c_out, c_in, |o, c| {
        std::array::from_fn(|k| weight[(o * c_in + c) * 9 + k])
    });
    let correlation = Correlation {
        batch: g.batch,
        src_channels: c_in,
        dst_channels: c_out,
        src: g.input,
        dst: g.output,
        pad: g.pad_begin,
    };
    correlate(
        input,
        &u,
        bias,
        &correlation,
        rayon::current_num_threads(),
        BLOCK_TILES,
    )
}

/// The input gradient of a layer that [`applies`]: as [`super::dense::input_grad_f32`].
pub(crate) fn input_grad_f32(grad_out: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (c_in, c_out) = (g.channels_in, g.channels_out);
    // Kernel (c, o) of the gradient's correlation is (o, c)'s, flipped on both axes.
    let u = transformed_kernels(c_in, c_out, |c, o| {
        std::array::from_fn(|k| weight[(o * c_in + c) * 9 + 8 - k])
    });
    let correlation = Correlation {
        batch: g.batch,
        src_channels: c_out,
        dst_channels: c_in,
        src: g.output,
        dst: g.input,
        pad: [2 - g.pad_begin[0], 2 - g.pad_begin[1]],
    };
    correlate(
        grad_out,
        &u,
        None,
        &correlation,
        rayon::current_num_threads(),
        BLOCK_TILES,
    )
}

/// `dst[n, o, y, x] = bias[o] + sum_{c, ky, kx} kernel[o, c, ky, kx] * src[n, c, y + ky - pad_y, x
/// + kx - pad_x]`, reads outside `src` being 0: a stride-1 3 x 3 correlation.
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
}

impl Correlation {
    /// Tiles per image `[rows, columns]`: 2 x 2 outputs each, the last row and column of tiles
    /// overhanging an odd plane.
    fn tiles(&self) -> [usize; 2] {
        [self.dst[0].div_ceil(2), self.dst[1].div_ceil(2)]
    }

    /// Images per group, a parallel task: enough for a block of [`BLOCK_TILES`] tiles, evened out
    /// so that each thread's share of the batch splits into equal groups.
    fn images_per_group(&self, threads: usize) -> usize {
        let [th, tw] = self.tiles();
        let per_thread = self.batch.div_ceil(threads.max(1));
        let wanted = BLOCK_TILES.div_ceil((th * tw).max(1)).max(1);
        let groups_per_thread = per_thread.div_ceil(wanted).max(1);
        per_thread.div_ceil(groups_per_thread).max(1)
    }

    /// Rows of tiles per block, for `rows` rows of tiles in all: about [`BLOCK_TILES`] tiles, the
    /// rows split evenly between the blocks.
    fn block_rows(&self, rows: usize, block_tiles: usize) -> usize {
        let wanted = (block_tiles / self.tiles()[1].max(1)).max(1);
        rows.div_ceil(rows.div_ceil(wanted).max(1)).max(1)
    }
}

/// The 16 transformed kernels `U = G g Gᵀ` of every (destination, source) channel pair, laid
/// out `[dst_channels, 16, src_channels]` (position `ξ = 4a + b` of the 4 x 4 block in the middle,
/// so that each destination channel's values are one contiguous run written by one task), from
/// `kernel(d, s)`, the pair's 3 x 3 values row-major.
fn transformed_kernels(
    dst_channels: usize,
    src_channels: usize,
    kernel: impl Fn(usize, usize) -> [f32; 9] + Sync,
) -> Vec<f32> {
    let per_dst = 16 * src_channels;
    crate::written(
        dst_channels * per_dst,
        per_dst.max(1),
        || vec![0f32; per_dst],
        |block, d, out| {
            for s in 0..src_channels {
                let g = kernel(d, s);
                // G g, 4 x 3: G's rows are [1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1].
                let mut gg = [[0f32; 3]; 4];
                for x in 0..3 {
                    let (g0, g1, g2) = (g[x], g[3 + x], g[6 + x]);
                    gg[0][x] = g0;
                    gg[1][x] = 0.5 * (g0 + g1 + g2);
                    gg[2][x] = 0.5 * (g0 - g1 + g2);
                    gg[3][x] = g2;
                }
                // (G g) Gᵀ, the same along each row.
                for (a, [g0, g1, g2]) in gg.into_iter().enumerate() {
                    let row = [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
                    for (b, value) in row.into_iter().enumerate() {
                        block[(4 * a + b) * src_channels + s] = value;
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
    /// One block's transformed inputs `[16, src_channels, block tiles]`.
    v: Vec<f32>,
    /// One block's products `[16, dst_channels, block tiles]`.
    m: Vec<f32>,
    /// One source plane's rows split into even and odd padded columns (see [`split_plane`]).
    split: Vec<f32>,
    /// One padded source row, as pairs of floats.
    padded: Vec<u64>,
    /// The transforms' intermediate rows or planes.
    rows: Vec<f32>,
}

/// Runs `c` on `src` (`[batch, src_channels, src_h, src_w]`) with the transformed kernels `u`
/// (`[dst_channels, 16, src_channels]`); returns `[batch, dst_channels, dst_h, dst_w]`. Groups of
/// images run in parallel, each in blocks of about `block_tiles` tiles ([`BLOCK_TILES`]; the tests
/// use small blocks to split images).
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
    debug_assert_eq!(u.len(), c.dst_channels * 16 * c.src_channels);
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
    let (src_plane, dst_plane) = (c.src[0] * c.src[1], c.dst[0] * c.dst[1]);
    let (cs, cd) = (c.src_channels, c.dst_channels);
    let n = images.len() / (cs * src_plane).max(1);
    let block = c.block_rows(n * th, block_tiles);
    scratch.split.resize((2 * block + 2) * 2 * (tw + 1), 0.0);
    scratch.padded.resize(tw + 1, 0);
    scratch.rows.resize((8 * (tw + 1)).max(12 * block * tw), 0.0);
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
        scratch.v.resize(16 * cs * tiles, 0.0);
        scratch.m.resize(16 * cd * tiles, 0.0);
        simd.run(
            #[inline(always)]
            || {
                for (j, at, rows) in parts.clone() {
                    for s in 0..cs {
                        let plane = &images[(j * cs + s) * src_plane..][..src_plane];
                        split_plane(plane, c, rows.clone(), &mut scratch.split, &mut scratch.padded);
                        let v = &mut scratch.v;
                        transform_input(
                            &scratch.split,
                            c,
                            rows.len(),
                            v,
                            s * tiles + at,
                            cs * tiles,
                            &mut scratch.rows,
                        );
                    }
                }
            },
        );
        for xi in 0..16 {
            let lhs = Matrix::rows(&u[xi * cs..], 16 * cs);
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
                        let corners = &mut scratch.rows;
                        transform_output(
                            &scratch.m,
                            c,
                            rows.clone(),
                            o * tiles + at,
                            cd * tiles,
                            b,
                            corners,
                            plane,
                        );
                    }
                }
            },
        );
    }
}

/// Splits rows of tiles `rows` of one source plane into `split` `[2 * rows.len() + 2, 2, tiles_w +
/// 1]`: for every padded row `Y` in `2 * rows.start..2 * rows.end + 2` (source row `Y - pad_y`,
/// zeros outside the plane), the values at even padded columns `X = 2k` and at odd ones `X = 2k +
/// 1` (source column `X - pad_x`, zeros outside). Tile `(ty, tx)` reads padded rows `2ty..2ty +
/// 4` and columns `2tx..2tx + 4`, which are then `even[tx], odd[tx], even[tx + 1], odd[tx + 1]`:
/// contiguous across a row of tiles. `padded` is scratch of `2 * tiles_w + 2`.
#[inline(always)]
fn split_plane(
    plane: &[f32],
    c: &Correlation,
    rows: std::ops::Range<usize>,
    split: &mut [f32],
    padded: &mut [u64],
) {
    let tw = c.tiles()[1];
    let [h, w] = c.src;
    let [py, px] = c.pad;
    let half = tw + 1;
    // The padded row, as pairs of floats (even column, odd column) in one `u64` each: splitting
    // them is then a truncation and a shift, which vectorise (a stride-2 gather of floats did not).
    let pairs = &mut padded[..half];
    // The padded row's source columns: `px..px + w`, cut at the row's end (an odd plane's last
    // tile overhangs it, or the padding after is smaller than `2 - px`).
    let inside = px.min(2 * half)..(px + w).min(2 * half);
    {
        let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut *pairs);
        flat[..inside.start].fill(0.0);
        flat[inside.end..].fill(0.0);
    }
    let padded_rows = 2 * rows.start..2 * rows.end + 2;
    for (y, pair) in padded_rows.zip(split.chunks_exact_mut(2 * half)) {
        let (even, odd) = pair.split_at_mut(half);
        if y < py || y - py >= h {
            even.fill(0.0);
            odd.fill(0.0);
            continue;
        }
        let flat: &mut [f32] = bytemuck::cast_slice_mut(&mut *pairs);
        flat[inside.clone()].copy_from_slice(&plane[(y - py) * w..][..inside.len()]);
        let (even, odd) = (&mut even[..half], &mut odd[..half]);
        for k in 0..half {
            let (low, high) = (pairs[k] as u32, (pairs[k] >> 32) as u32);
            // The float at the lower address is the first of the pair.
            let (first, second) = if cfg!(target_endian = "little") {
                (low, high)
            } else {
                (high, low)
            };
            even[k] = f32::from_bits(first);
            odd[k] = f32::from_bits(second);
        }
    }
}

/// The 16 transformed rows of tiles `V = Bᵀ d B` of one source channel's `count` rows of tiles,
/// from their [`split_plane`]: row of tiles `ty`'s position `ξ` goes to `v[ξ * xi_stride + base +
/// ty * tiles_w..][..tiles_w]`. `Bᵀ`'s rows are `[1, 0, -1, 0]`, `[0, 1, 1, 0]`, `[0, -1, 1, 0]`,
/// `[0, 1, 0, -1]`. `rows` is scratch of `8 * (tiles_w + 1)`.
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
    let tw = c.tiles()[1];
    let half = tw + 1;
    for ty in 0..count {
        // `Bᵀ d` down the columns, for the even and the odd halves of the four padded rows.
        let block = &split[4 * ty * half..][..8 * half];
        let [e0, o0, e1, o1, e2, o2, e3, o3] = std::array::from_fn(|r| &block[r * half..][..half]);
        for (half_rows, [d0, d1, d2, d3]) in rows
            .chunks_exact_mut(4 * half)
            .zip([[e0, e1, e2, e3], [o0, o1, o2, o3]])
        {
            let (t0, rest) = half_rows.split_at_mut(half);
            let (t1, rest) = rest.split_at_mut(half);
            let (t2, t3) = rest.split_at_mut(half);
            b_transposed([d0, d1, d2, d3], t0, t1, t2, t3);
        }
        // Then `(Bᵀ d) B` along each row: columns `e[tx], o[tx], e[tx + 1], o[tx + 1]`.
        let (even, odd) = rows.split_at(4 * half);
        let at = base + ty * tw;
        for i in 0..4 {
            // Each row of tiles reads its columns `tx` and `tx + 1` of each half.
            let (e, o) = (&even[i * half..][..half], &odd[i * half..][..half]);
            let ((e0, e1), (o0, o1)) = ((&e[..tw], &e[1..]), (&o[..tw], &o[1..]));
            let [v0, v1, v2, v3] = four_rows(v, 4 * i, xi_stride, at, tw);
            b_transposed([e0, o0, e1, o1], v0, v1, v2, v3);
        }
    }
}

/// `t = Bᵀ d` for every column of the four rows `d` (`t0 = d0 - d2`, `t1 = d1 + d2`, `t2 = d2 -
/// d1`, `t3 = d1 - d3`), as long as `t0`. The outputs are separate arguments so that the compiler
/// knows they do not overlap, and vectorises.
#[inline(always)]
fn b_transposed(d: [&[f32]; 4], t0: &mut [f32], t1: &mut [f32], t2: &mut [f32], t3: &mut [f32]) {
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

/// The rows `v[ξ * xi_stride + at..][..len]` for `ξ = first..first + 4`.
#[inline(always)]
fn four_rows(v: &mut [f32], first: usize, xi_stride: usize, at: usize, len: usize) -> [&mut [f32]; 4] {
    let (r0, rest) = v[first * xi_stride + at..].split_at_mut(xi_stride);
    let (r1, rest) = rest.split_at_mut(xi_stride);
    let (r2, r3) = rest.split_at_mut(xi_stride);
    [&mut r0[..len], &mut r1[..len], &mut r2[..len], &mut r3[..len]]
}

/// Rows of tiles `rows` of one destination channel back into outputs `Y = Aᵀ M A + bias` (`Aᵀ`'s
/// rows `[1, 1, 1, 0]`, `[0, 1, -1, -1]`), written into their rows of `plane` (`[dst_h, dst_w]`);
/// `m[ξ * xi_stride + base..][..rows.len() * tiles_w]` holds the tiles' position `ξ`. `corners` is scratch of `12 * tiles_h *
/// tiles_w`, `rows` of `2 * tiles_w`.
#[allow(clippy::too_many_arguments)] // the pieces of one call, named
#[inline(always)]
fn transform_output(
    m: &[f32],
    c: &Correlation,
    rows: std::ops::Range<usize>,
    base: usize,
    xi_stride: usize,
    bias: f32,
    corners: &mut [f32],
    plane: &mut [f32],
) {
    let tw = c.tiles()[1];
    let [h, w] = c.dst;
    let tiles = rows.len() * tw;
    let p = |xi: usize| &m[xi * xi_stride + base..][..tiles];
    // `Aᵀ M` down the columns of each tile, one plane of tiles per (row of Aᵀ, column b)...
    let (sums, corners) = corners[..12 * tiles].split_at_mut(8 * tiles);
    for (b, pair) in sums.chunks_exact_mut(2 * tiles).enumerate() {
        let (s0, s1) = pair.split_at_mut(tiles);
        let (m0, m1, m2, m3) = (p(b), p(4 + b), p(8 + b), p(12 + b));
        let (s0, s1) = (&mut s0[..tiles], &mut s1[..tiles]);
        let (m0, m1, m2, m3) = (&m0[..tiles], &m1[..tiles], &m2[..tiles], &m3[..tiles]);
        for t in 0..tiles {
            s0[t] = m0[t] + m1[t] + m2[t];
            s1[t] = m1[t] - m2[t] - m3[t];
        }
    }
    // ...then `(Aᵀ M) A` along them: each tile's four outputs, as four planes of tiles (top
    // left, top right, bottom left, bottom right).
    let (y00, rest) = corners.split_at_mut(tiles);
    let (y01, rest) = rest.split_at_mut(tiles);
    let (y10, y11) = rest.split_at_mut(tiles);
    let sum = |b: usize, row: usize| &sums[(2 * b + row) * tiles..][..tiles];
    for (row, (left, right)) in [(0, (&mut *y00, &mut *y01)), (1, (&mut *y10, &mut *y11))] {
        let (s0, s1, s2, s3) = (sum(0, row), sum(1, row), sum(2, row), sum(3, row));
        let (left, right) = (&mut left[..tiles], &mut right[..tiles]);
        let (s0, s1, s2, s3) = (&s0[..tiles], &s1[..tiles], &s2[..tiles], &s3[..tiles]);
        for t in 0..tiles {
            left[t] = s0[t] + s1[t] + s2[t] + bias;
            right[t] = s1[t] - s2[t] - s3[t] + bias;
        }
    }
    for (i, ty) in rows.enumerate() {
        for (left, right, y) in [(&*y00, &*y01, 2 * ty), (&*y10, &*y11, 2 * ty + 1)] {
            if y >= h {
                break;
            }
            let (left, right) = (&left[i * tw..][..tw], &right[i * tw..][..tw]);
            let out = &mut plane[y * w..][..w];
            for ((two, &l), &r) in out.chunks_exact_mut(2).zip(left).zip(right) {
                two[0] = l;
                two[1] = r;
            }
            if w % 2 == 1 {
                out[w - 1] = left[tw - 1]; // the last tile's left column only
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense;
    use crate::test_values::{naive_input_grad, out_size, values};

    /// 3 x 3 stride-1 geometries: odd and even planes, every padding from 0 to 2 (asymmetric
    /// too), planes smaller than a tile.
    fn geometries() -> Vec<Geometry> {
        let cases = [
            ((16, 16), [9, 9], [(1, 1), (1, 1)]),
            ((17, 20), [8, 11], [(1, 1), (1, 1)]),
            ((16, 18), [7, 6], [(0, 0), (2, 2)]),
            ((20, 16), [6, 7], [(2, 1), (0, 2)]),
            ((16, 16), [2, 3], [(1, 1), (1, 1)]),
            ((18, 16), [5, 5], [(0, 0), (0, 0)]),
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
                for (threads, block_tiles) in [
                    (1, BLOCK_TILES),
                    (2, BLOCK_TILES),
                    (4, BLOCK_TILES),
                    (1, 1),
                    (2, 7),
                ] {
                    let correlation = Correlation {
                        batch: g.batch,
                        src_channels: g.channels_in,
                        dst_channels: g.channels_out,
                        src: g.input,
                        dst: g.output,
                        pad: g.pad_begin,
                    };
                    let u = transformed_kernels(g.channels_out, g.channels_in, |o, c| {
                        std::array::from_fn(|k| w[(o * g.channels_in + c) * 9 + k])
                    });
                    let got = correlate(&x, &u, bias, &correlation, threads, block_tiles);
                    let what = format!(
                        "{g:?} bias {} threads {threads} block {block_tiles}",
                        bias.is_some()
                    );
                    assert_close(&got, &expected, &what);
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
    fn groups_and_blocks_hold_about_a_block_of_tiles() {
        let layer4 = Correlation {
            batch: 32,
            src_channels: 512,
            dst_channels: 512,
            src: [7, 7],
            dst: [7, 7],
            pad: [1, 1],
        };
        // 16 tiles per image: 8 images make a block; a thread's 16 split into 2 groups.
        assert_eq!(layer4.images_per_group(2), 8);
        assert_eq!(
            layer4.block_rows(8 * 4, BLOCK_TILES),
            32,
            "8 images' 4 rows of 4 tiles"
        );
        assert_eq!(Correlation { batch: 3, ..layer4 }.images_per_group(2), 2);
        let layer1 = Correlation {
            src: [56, 56],
            dst: [56, 56],
            src_channels: 64,
            dst_channels: 64,
            ..layer4
        };
        assert_eq!(layer1.images_per_group(2), 1, "784 tiles");
        assert_eq!(
            layer1.block_rows(28, BLOCK_TILES),
            4,
            "7 blocks of 4 rows of 28 tiles"
        );
        let layer2 = Correlation {
            src: [28, 28],
            dst: [28, 28],
            ..layer1
        };
        assert_eq!(
            layer2.block_rows(14, BLOCK_TILES),
            7,
            "14 rows of 14 tiles, in 2 blocks"
        );
        assert_eq!(layer2.block_rows(14, 1), 1);
    }
}
