//! The forward pass of a dense convolution (`groups == 1`) on `flex`: im2col and one `gemm` per
//! image, written straight into the NCHW output.
//!
//! Measured one layer at a time (`VPROMPT_CONV_MODEL=resnet18 cargo bench --bench conv_layers`),
//! burn-flex's forward pass of ResNet-18's 20 convolutions took 1.22-1.26 s at batch 32 against
//! PyTorch's 0.81 s, while their input gradients were at parity. burn-flex converts the whole batch
//! to NHWC on one thread, then runs one small `gemm` per 512 output pixels with freshly allocated
//! buffers, and scatters each result into NCHW. Here each image is one `gemm` with the weight as it
//! is stored (`[c_out, c_in * k_h * k_w]`, the order im2col's rows follow), so the product lands in
//! NCHW order with no transpose, and images run in parallel. The columns are built per image from
//! NCHW rows (contiguous copies for stride 1), in chunks of output rows when an image's would
//! exceed [`CHUNK_LIMIT`]; a 1 x 1, stride-1, unpadded convolution needs no columns at all.
//! Images with small output planes (under [`GROUPED_PLANES`] positions) are done in groups, one
//! gemm over the group's columns side by side, so that the weight is packed once per group.

use rayon::prelude::*;

use super::{Geometry, Simd};

/// Most `f32`s in one group's column buffer (16 MiB), which bounds how many images of small
/// planes are grouped (below); the tests lower it to reach every path.
pub(crate) const COLUMN_LIMIT: usize = 4 << 20;

/// Most `f32`s in one chunk of columns (1 MiB): an image's columns are built and multiplied a
/// chunk of output rows at a time, so that gemm reads them from the L2 cache rather than memory.
/// ResNet's stem (7.4 MiB of columns per image) went from 56-63 to 46-55 ms forward and from
/// 136-142 to 120-125 ms with its input gradient (`conv_layers`, four and two alternated pairs);
/// the other layers' columns fit whole or in two chunks, and Lite0's stem was unchanged.
const CHUNK_LIMIT: usize = 1 << 18;

/// Output positions one gemm should cover at least: images with smaller output planes are done
/// in groups whose columns sit side by side, one gemm per group. Per image, ResNet-18's last
/// layers (512 channels at 7 x 7 px) were gemms of 49 columns that packed the 512 x 4608 weight
/// again for every image, 2.6x PyTorch's time forward and backward (`conv_layers`).
const GROUP_COLUMNS: usize = 1024;

/// Output planes of at least this many positions are not grouped: at 14 x 14 px (ResNet-18's
/// 256-channel layers) groups were no faster, their columns no longer fitting the L2 cache.
const GROUPED_PLANES: usize = 128;

impl Geometry {
    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    fn taps(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// A 1 x 1, stride-1, unpadded convolution: the image itself is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad_begin == [0, 0]
    }

    /// Images per group for output planes under [`GROUPED_PLANES`] positions (1 otherwise, and for
    /// pointwise layers, which read the image in place and were no faster grouped):
    /// enough to reach [`GROUP_COLUMNS`] within `limit` column values, then evened out so that
    /// each thread's share of the batch splits into equal groups.
    fn images_per_group(&self, limit: usize, threads: usize) -> usize {
        let plane = self.output[0] * self.output[1];
        if plane == 0 || plane >= GROUPED_PLANES || self.is_pointwise() {
            return 1;
        }
        let within_limit = limit / (self.taps() * plane).max(1);
        let wanted = GROUP_COLUMNS.div_ceil(plane).min(within_limit);
        crate::images_per_group(self.batch, threads, wanted)
    }

    /// Output rows per chunk, so that a chunk's columns stay within `limit` values and
    /// [`CHUNK_LIMIT`].
    fn rows_per_chunk(&self, limit: usize) -> usize {
        let row = (self.taps() * self.output[1]).max(1);
        let limit = limit.min(CHUNK_LIMIT);
        (limit / row).clamp(1, self.output[0].max(1))
    }
}

/// The convolution `out[n, o, y, x] = bias[o] + sum_{c, ky, kx} weight[o, c, ky, kx] *
/// input[n, c, y*sy + ky*dy - py, x*sx + kx*dx - px]` (taps outside the input read 0).
///
/// `input` is `[batch, c_in, in_h, in_w]`, `weight` `[c_out, c_in, k_h, k_w]`, `bias` `[c_out]`,
/// all contiguous; the result is `[batch, c_out, out_h, out_w]`.
pub(crate) fn forward_f32(input: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    if super::winograd::applies(g) {
        return super::winograd::forward_f32(input, weight, bias, g);
    }
    let threads = rayon::current_num_threads();
    forward_f32_with(input, weight, bias, g, COLUMN_LIMIT, threads)
}

/// [`forward_f32`] with the column budget and the thread count that decides between parallel
/// images and a parallel gemm as parameters (the tests use them to reach every path on any
/// machine).
pub(crate) fn forward_f32_with(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    limit: usize,
    threads: usize,
) -> Vec<f32> {
    let in_image = g.channels_in * g.input[0] * g.input[1];
    let out_plane = g.output[0] * g.output[1];
    let out_image = g.channels_out * out_plane;
    debug_assert_eq!(input.len(), g.batch * in_image);
    debug_assert_eq!(weight.len(), g.channels_out * g.taps());
    // Every output starts from its bias, written in the same pass as the fresh buffer: the
    // products are added to it.
    let mut output = match bias {
        Some(bias) => crate::filled(g.batch * out_image, out_plane, |p| bias[p % g.channels_out]),
        None => crate::zeroed(g.batch * out_image),
    };
    if out_image == 0 || in_image == 0 || g.taps() == 0 {
        return output; // no input values: every output is its bias
    }
    let weight = Matrix::rows(weight, g.taps());
    let group = g.images_per_group(limit, threads);
    if group > 1 {
        let pairs = output
            .par_chunks_mut(group * out_image)
            .zip(input.par_chunks(group * in_image));
        pairs.for_each_init(
            || (Vec::new(), Vec::new()),
            |(columns, product), (out, images)| {
                convolve_group(images, weight, bias, g, columns, product, out)
            },
        );
        return output;
    }
    for_each_image(
        input,
        in_image,
        &mut output,
        out_image,
        threads,
        |image, out, columns, parallelism| {
            convolve_image(image, weight, bias, g, limit, columns, out, parallelism)
        },
    );
    output
}

/// A group of images of [`forward_f32`] (`images` `[n, c_in, in_h, in_w]`, `out` `[n, c_out,
/// out_h, out_w]`) as one gemm: the images' columns side by side (`[taps, n * plane]`), the
/// product (`[c_out, n * plane]`, starting from the bias) then copied into each image's planes.
/// `columns` and `product` are reused across the groups of one thread.
fn convolve_group(
    images: &[f32],
    weight: Matrix<'_>,
    bias: Option<&[f32]>,
    g: &Geometry,
    columns: &mut Vec<f32>,
    product: &mut Vec<f32>,
    out: &mut [f32],
) {
    let plane = g.output[0] * g.output[1];
    let (c_out, taps) = (g.channels_out, g.taps());
    let n = out.len() / (c_out * plane);
    let width = n * plane;
    columns.resize(g.phased_len() + taps * width, 0.0);
    let (phased, columns) = columns.split_at_mut(g.phased_len());
    let in_image = images.len() / n;
    let simd = Simd::detect();
    for (j, image) in images.chunks(in_image).enumerate() {
        simd.run(
            #[inline(always)]
            || {
                let source = im2col_source(image, g, phased);
                im2col(source, g, 0..g.output[0], columns, width, j * plane)
            },
        );
    }
    product.resize(c_out * width, 0.0);
    if let Some(bias) = bias {
        fill_bias(product, bias, width);
    }
    let rhs = Matrix::rows(columns, width);
    gemm_into(
        product,
        width,
        0,
        width,
        weight,
        taps,
        rhs,
        bias.is_some(),
        c_out,
        gemm::Parallelism::None,
    );
    for (j, image) in out.chunks_mut(c_out * plane).enumerate() {
        for (dst, src) in image.chunks_mut(plane).zip(product.chunks(width)) {
            dst.copy_from_slice(&src[j * plane..(j + 1) * plane]);
        }
    }
}

/// Runs `per_image(input image, output image, column buffer, gemm parallelism)` for every image
/// of `input` (`in_image` values each) and `output` (`out_image` values each). With at least as
/// many images as threads, images run in parallel with a single-threaded gemm each and one column
/// buffer per thread; with fewer, they run one after another with a parallel gemm.
fn for_each_image<F>(
    input: &[f32],
    in_image: usize,
    output: &mut [f32],
    out_image: usize,
    threads: usize,
    per_image: F,
) where
    F: Fn(&[f32], &mut [f32], &mut Vec<f32>, gemm::Parallelism) + Sync,
{
    let images = input.len() / in_image.max(1);
    if images >= threads {
        let pairs = output.par_chunks_mut(out_image).zip(input.par_chunks(in_image));
        pairs.for_each_init(Vec::new, |columns, (out, image)| {
            per_image(image, out, columns, gemm::Parallelism::None)
        });
    } else {
        let mut columns = Vec::new();
        for (out, image) in output.chunks_mut(out_image).zip(input.chunks(in_image)) {
            per_image(image, out, &mut columns, gemm::Parallelism::Rayon(0));
        }
    }
}

/// Sets every value of the `[c_out, plane]` image `out` to its channel's bias.
fn fill_bias(out: &mut [f32], bias: &[f32], plane: usize) {
    for (channel, &b) in out.chunks_mut(plane).zip(bias) {
        channel.fill(b);
    }
}

/// One image of [`forward_f32`]: `out` (`[c_out, out_h * out_w]`, holding the bias on entry, or
/// zeros without one) += weight x columns, chunk by chunk of output rows. `columns` is reused
/// across the images of one thread.
#[allow(clippy::too_many_arguments)] // the pieces of one call, named
fn convolve_image(
    image: &[f32],
    weight: Matrix<'_>,
    bias: Option<&[f32]>,
    g: &Geometry,
    limit: usize,
    columns: &mut Vec<f32>,
    out: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    let [out_h, out_w] = g.output;
    let plane = out_h * out_w;
    let read_out = bias.is_some(); // `out` holds the bias
    let (m, k) = (g.channels_out, g.taps());
    if g.is_pointwise() {
        let rhs = Matrix::rows(image, plane);
        gemm_into(out, plane, 0, plane, weight, k, rhs, read_out, m, parallelism);
        return;
    }
    // The phased image (where `phases_columns`, else nothing) heads the buffer, the chunk's
    // columns follow.
    let simd = Simd::detect();
    let phased_len = g.phased_len();
    columns.resize(phased_len, 0.0);
    simd.run(
        #[inline(always)]
        || im2col_source(image, g, columns),
    );
    let rows = g.rows_per_chunk(limit);
    for first in (0..out_h).step_by(rows) {
        let last = (first + rows).min(out_h);
        let width = (last - first) * out_w;
        columns.resize(phased_len + k * width, 0.0);
        let (phased, columns) = columns[..phased_len + k * width].split_at_mut(phased_len);
        let source = if phased_len == 0 { image } else { &*phased };
        simd.run(
            #[inline(always)]
            || im2col(source, g, first..last, columns, width, 0),
        );
        let rhs = Matrix::rows(columns, width);
        gemm_into(
            out,
            plane,
            first * out_w,
            width,
            weight,
            k,
            rhs,
            read_out,
            m,
            parallelism,
        );
    }
}

/// Where one row of the column matrix (one tap `(channel, ky, kx)`) meets the input: output
/// columns `x_begin..x_end` read input columns `first, first + s_x, ...` of their input row (see
/// [`Geometry::input_row`]); the other output columns read padding.
struct Tap {
    channel: usize,
    ky: usize,
    x_begin: usize,
    x_end: usize,
    first: usize,
}

impl Geometry {
    /// The [`Tap`] of column-matrix row `tap` (`(channel * k_h + ky) * k_w + kx`).
    fn tap(&self, tap: usize) -> Tap {
        let [k_h, k_w] = self.kernel;
        let (channel, ky, kx) = (tap / (k_h * k_w), tap / k_w % k_h, tap % k_w);
        let (s_x, d_x, p_x) = (self.stride[1], self.dilation[1], self.pad_begin[1]);
        let (x, first) = super::reach(self.input[1], p_x, kx * d_x, s_x, self.output[1]);
        let (x_begin, x_end) = (x.start, x.end);
        Tap {
            channel,
            ky,
            x_begin,
            x_end,
            first,
        }
    }

    /// For stride-1 layers whose output rows are as wide as the input's (ResNet's 3 x 3 layers,
    /// any "same" convolution), tap `(ky, kx)` of output position `p = y * out_w + x` reads input
    /// position `p + shift` of its channel's plane, wherever it reads inside the input: the
    /// `shift` returned. Such a tap's column row is then one contiguous copy of the plane, with
    /// the positions whose column lies in the padding (which the copy takes from a neighbouring
    /// row) set to zero afterwards. `None` for other layers.
    fn flat_shift(&self, ky: usize, kx: usize) -> Option<isize> {
        let flat = self.stride == [1, 1] && self.input[1] == self.output[1];
        flat.then(|| {
            let row = (ky * self.dilation[0]) as isize - self.pad_begin[0] as isize;
            let column = (kx * self.dilation[1]) as isize - self.pad_begin[1] as isize;
            row * self.input[1] as isize + column
        })
    }

    /// The output positions `first..end` (within one plane) whose tap at `shift` (see
    /// [`Self::flat_shift`]) reads inside the input plane, clamped to `first..end`.
    fn inside(&self, shift: isize, first: usize, end: usize) -> std::ops::Range<usize> {
        let plane = (self.input[0] * self.input[1]) as isize;
        let begin = (-shift).clamp(first as isize, end as isize) as usize;
        let stop = (plane - shift).clamp(begin as isize, end as isize) as usize;
        begin..stop
    }

    /// The input row that output row `y` reads through kernel row `ky`; `None` in the padding.
    fn input_row(&self, y: usize, ky: usize) -> Option<usize> {
        (y * self.stride[0] + ky * self.dilation[0])
            .checked_sub(self.pad_begin[0])
            .filter(|&row| row < self.input[0])
    }

    /// Whether [`im2col`] reads the image split into column phases ([`im2col_source`]): for a
    /// horizontal stride above 1 where the taps read each input value more than once on average
    /// (`k_h * k_w > s_y * s_x`). A 1 x 1 stride-2 shortcut reads a quarter of the image, which the
    /// split would read whole (its forward pass took 1.3x as long).
    fn phases_columns(&self) -> bool {
        self.stride[1] > 1 && self.kernel[0] * self.kernel[1] > self.stride[0] * self.stride[1]
    }

    /// Values per input row as [`im2col`] reads it: the row itself, or its `s_x` column phases
    /// (`ix % s_x`), each `in_w.div_ceil(s_x)` long.
    fn source_row_len(&self) -> usize {
        let s_x = self.stride[1];
        if self.phases_columns() {
            s_x * self.input[1].div_ceil(s_x)
        } else {
            self.input[1]
        }
    }

    /// Where input column `ix` sits in a row of the phased image ([`im2col_source`]).
    fn source_column(&self, ix: usize) -> usize {
        let s_x = self.stride[1];
        ix % s_x * self.input[1].div_ceil(s_x) + ix / s_x
    }

    /// Values of the phased image [`im2col_source`] writes: 0 when it is the image itself.
    fn phased_len(&self) -> usize {
        if self.phases_columns() {
            self.channels_in * self.input[0] * self.source_row_len()
        } else {
            0
        }
    }
}

/// The image (`[c_in, in_h, in_w]`) as [`im2col`] reads it: the image itself, or where
/// [`Geometry::phases_columns`], `phased` ([`Geometry::phased_len`] values) with each row split
/// into its column phases, so that a tap's output row (input columns `first, first + s_x, ...`)
/// is one contiguous copy. Strided copies per tap and output row were most of im2col's 12 % of
/// ResNet-18's convolution time (`conv_layers`; its 7 x 7 stem reads each input row 7 times per
/// channel); the split reads each value once.
#[inline(always)] // into `Simd::run`
fn im2col_source<'a>(image: &'a [f32], g: &Geometry, phased: &'a mut [f32]) -> &'a [f32] {
    let (in_w, s_x) = (g.input[1], g.stride[1]);
    if !g.phases_columns() {
        return image;
    }
    let phase_w = in_w.div_ceil(s_x);
    for (row, split) in image
        .chunks_exact(in_w)
        .zip(phased.chunks_exact_mut(s_x * phase_w))
    {
        crate::split_phases(row, split, s_x);
    }
    phased
}

/// Fills columns `offset..offset + rows.len() * out_w` of `columns` (`[c_in * k_h * k_w,
/// stride]`) with the input values each output position of `rows` reads, 0 where a tap lands in
/// the padding. `image` is [`im2col_source`]'s.
#[inline(always)] // into `Simd::run`, so that its copies vectorise as wide as the CPU allows
fn im2col(
    image: &[f32],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    columns: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let in_h = g.input[0];
    let s_x = g.stride[1];
    let phased = g.phases_columns();
    let row_len = g.source_row_len();
    let out_w = g.output[1];
    let width = rows.len() * out_w;
    for (tap, column_row) in columns.chunks_mut(stride).enumerate() {
        let column_row = &mut column_row[offset..offset + width];
        let Tap {
            channel,
            ky,
            x_begin,
            x_end,
            first,
        } = g.tap(tap);
        let plane = &image[channel * in_h * row_len..(channel + 1) * in_h * row_len];
        if let Some(shift) = g.flat_shift(ky, tap % g.kernel[1]) {
            let first = rows.start * out_w;
            let inside = g.inside(shift, first, first + width);
            let (begin, end) = (inside.start - first, inside.end - first);
            column_row[..begin].fill(0.0);
            column_row[end..].fill(0.0);
            if begin < end {
                let source = (inside.start as isize + shift) as usize;
                column_row[begin..end].copy_from_slice(&plane[source..source + (end - begin)]);
            }
            zero_padding_columns(column_row, out_w, x_begin, x_end);
            continue;
        }
        // Where the tap's first input column sits in each row this tap reads.
        let from = if phased { g.source_column(first) } else { first };
        for (y, dst) in rows.clone().zip(column_row.chunks_mut(out_w)) {
            let Some(row) = g.input_row(y, ky) else {
                dst.fill(0.0);
                continue;
            };
            let src = &plane[row * row_len..(row + 1) * row_len];
            dst[..x_begin].fill(0.0);
            dst[x_end..].fill(0.0);
            if x_begin == x_end {
                continue;
            }
            let dst = &mut dst[x_begin..x_end];
            if phased {
                dst.copy_from_slice(&src[from..from + dst.len()]);
            } else {
                for (d, s) in dst.iter_mut().zip(src[from..].iter().step_by(s_x)) {
                    *d = *s;
                }
            }
        }
    }
}

/// Sets columns `..x_begin` and `x_end..` of every `out_w`-wide row of `column_row` to zero, one
/// strided pass per column: a 3 x 3 layer has at most one such column per tap, and a pass per row
/// would be a `memset` call per value.
#[inline(always)]
fn zero_padding_columns(column_row: &mut [f32], out_w: usize, x_begin: usize, x_end: usize) {
    for x in (0..x_begin).chain(x_end..out_w) {
        for v in column_row[x..].iter_mut().step_by(out_w) {
            *v = 0.0;
        }
    }
}

/// The adjoint of [`im2col`], walking the same (tap, output row) pairs. Sharing that walk as an
/// iterator made the layers 5-8 % slower (ResNet-18's 20, forward and with gradients, two rounds):
/// at 7 x 7 px a row is 7 values, so per-row overhead counts.
///
/// Adds every value of columns `offset..offset + rows.len() * out_w` of `columns` (one row of
/// `stride` values per tap) into the input position it was read from in `image_grad` (`[c_in,
/// in_h, in_w]`, or where [`Geometry::phases_columns`] the phased layout of [`im2col_source`],
/// which [`add_merged`] then adds into the image's gradient); values read from padding are
/// dropped. Taps of one channel sweep the same input plane one after another, so it stays in
/// cache; every tap's row is a contiguous addition, except for strided layers that are not
/// phased.
#[inline(always)] // into `Simd::run`, as `im2col`
fn col2im(
    columns: &mut [f32],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    image_grad: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let in_h = g.input[0];
    let s_x = g.stride[1];
    let phased = g.phases_columns();
    let row_len = g.source_row_len();
    let out_w = g.output[1];
    let width = rows.len() * out_w;
    for (tap, column_row) in columns.chunks_mut(stride).enumerate() {
        let column_row = &mut column_row[offset..offset + width];
        let Tap {
            channel,
            ky,
            x_begin,
            x_end,
            first,
        } = g.tap(tap);
        if x_begin == x_end {
            continue;
        }
        let plane = &mut image_grad[channel * in_h * row_len..(channel + 1) * in_h * row_len];
        if let Some(shift) = g.flat_shift(ky, tap % g.kernel[1]) {
            // The values read from padding columns are dropped by adding them as zeros.
            zero_padding_columns(column_row, out_w, x_begin, x_end);
            let first = rows.start * out_w;
            let inside = g.inside(shift, first, first + width);
            if inside.is_empty() {
                continue;
            }
            let src = &column_row[inside.start - first..inside.end - first];
            let target = (inside.start as isize + shift) as usize;
            for (d, s) in plane[target..target + src.len()].iter_mut().zip(src) {
                *d += *s;
            }
            continue;
        }
        let from = if phased { g.source_column(first) } else { first };
        for (y, src) in rows.clone().zip(column_row.chunks(out_w)) {
            let Some(row) = g.input_row(y, ky) else { continue };
            let dst = &mut plane[row * row_len..(row + 1) * row_len];
            let src = &src[x_begin..x_end];
            if phased {
                for (d, s) in dst[from..from + src.len()].iter_mut().zip(src) {
                    *d += *s;
                }
            } else {
                for (d, s) in dst[from..].iter_mut().step_by(s_x).zip(src) {
                    *d += *s;
                }
            }
        }
    }
}

/// Adds the phased gradient `phased` ([`im2col_source`]'s layout, [`Geometry::phased_len`]
/// values) into `image_grad` (`[c_in, in_h, in_w]`).
#[inline(always)] // into `Simd::run`
fn add_merged(phased: &[f32], g: &Geometry, image_grad: &mut [f32]) {
    let rows = phased.chunks_exact(g.source_row_len());
    for (split, row) in rows.zip(image_grad.chunks_exact_mut(g.input[1])) {
        crate::add_merged_phases(split, row, g.stride[1]);
    }
}

/// The input gradient of [`forward_f32`]'s convolution:
/// `grad_in[n, c, y*sy + ky*dy - py, x*sx + kx*dx - px] += weight[o, c, ky, kx] * grad_out[n, o, y, x]`
/// over every output position and tap that lands inside the input.
///
/// Per image, one gemm `weight^T x grad_out[n]` (`[c_in * k_h * k_w, out_h * out_w]`, in chunks of
/// output rows like the forward pass) and a [`col2im`] into the image's gradient; a pointwise
/// layer's product is the gradient itself. `grad_out` is `[batch, c_out, out_h, out_w]`, `weight`
/// `[c_out, c_in, k_h, k_w]`, both contiguous; the result is `[batch, c_in, in_h, in_w]`.
///
/// burn-flex computes the same through its transposed convolution, whose col2im adds one scalar
/// at a time with index arithmetic per element and zeroes a fresh column buffer per image; it
/// was 10 % of ResNet-18's training step.
pub(crate) fn input_grad_f32(grad_out: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    if super::winograd::applies(g) {
        return super::winograd::input_grad_f32(grad_out, weight, g);
    }
    let threads = rayon::current_num_threads();
    input_grad_f32_with(grad_out, weight, g, COLUMN_LIMIT, threads)
}

/// [`input_grad_f32`] with the column budget and the thread count as parameters (as in
/// [`forward_f32_with`]).
pub(crate) fn input_grad_f32_with(
    grad_out: &[f32],
    weight: &[f32],
    g: &Geometry,
    limit: usize,
    threads: usize,
) -> Vec<f32> {
    let in_image = g.channels_in * g.input[0] * g.input[1];
    let out_image = g.channels_out * g.output[0] * g.output[1];
    debug_assert_eq!(grad_out.len(), g.batch * out_image);
    debug_assert_eq!(weight.len(), g.channels_out * g.taps());
    let mut grad_in = crate::zeroed(g.batch * in_image);
    if in_image == 0 || out_image == 0 {
        return grad_in;
    }
    let group = g.images_per_group(limit, threads);
    if group > 1 {
        let pairs = grad_in
            .par_chunks_mut(group * in_image)
            .zip(grad_out.par_chunks(group * out_image));
        pairs.for_each_init(
            || (Vec::new(), Vec::new()),
            |(columns, gathered), (image_grads, grads)| {
                input_grad_group(grads, weight, g, columns, gathered, image_grads)
            },
        );
        return grad_in;
    }
    for_each_image(
        grad_out,
        out_image,
        &mut grad_in,
        in_image,
        threads,
        |grad, image_grad, columns, parallelism| {
            input_grad_image(grad, weight, g, limit, columns, image_grad, parallelism)
        },
    );
    grad_in
}

/// One image of [`input_grad_f32`]: `grad` is `[c_out, out_h * out_w]`, `image_grad` (`[c_in,
/// in_h * in_w]`, zeroed) receives the gradient.
#[allow(clippy::too_many_arguments)] // the pieces of one call, named
fn input_grad_image(
    grad: &[f32],
    weight: &[f32],
    g: &Geometry,
    limit: usize,
    columns: &mut Vec<f32>,
    image_grad: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    let [out_h, out_w] = g.output;
    let plane = out_h * out_w;
    let (c_out, taps) = (g.channels_out, g.taps());
    let lhs = Matrix::transposed(weight, taps); // [taps, c_out], read in place
    if g.is_pointwise() {
        // The taps are the input channels and the columns the input plane.
        let rhs = Matrix::rows(grad, plane);
        gemm_into(
            image_grad,
            plane,
            0,
            plane,
            lhs,
            c_out,
            rhs,
            false,
            taps,
            parallelism,
        );
        return;
    }
    // A phased gradient (see `col2im`) heads the buffer, the chunk's columns follow.
    let simd = Simd::detect();
    let phased_len = g.phased_len();
    columns.resize(phased_len, 0.0);
    columns.fill(0.0);
    let rows = g.rows_per_chunk(limit);
    for first in (0..out_h).step_by(rows) {
        let last = (first + rows).min(out_h);
        let width = (last - first) * out_w;
        columns.resize(phased_len + taps * width, 0.0);
        let (phased, columns) = columns[..phased_len + taps * width].split_at_mut(phased_len);
        let rhs = Matrix::rows(&grad[first * out_w..], plane);
        gemm_into(
            columns,
            width,
            0,
            width,
            lhs,
            c_out,
            rhs,
            false,
            taps,
            parallelism,
        );
        let target = if phased_len == 0 { &mut *image_grad } else { phased };
        simd.run(
            #[inline(always)]
            || col2im(columns, g, first..last, target, width, 0),
        );
    }
    if phased_len > 0 {
        simd.run(
            #[inline(always)]
            || add_merged(&columns[..phased_len], g, image_grad),
        );
    }
}

/// A group of images of [`input_grad_f32`] (`grads` `[n, c_out, out_h, out_w]`, `image_grads`
/// `[n, c_in, in_h, in_w]`, zeroed) as one gemm: the images' output gradients side by side
/// (`gathered`, `[c_out, n * plane]`), `weight^T x gathered` into `columns` (`[taps, n *
/// plane]`), then each image's block of columns through [`col2im`].
fn input_grad_group(
    grads: &[f32],
    weight: &[f32],
    g: &Geometry,
    columns: &mut Vec<f32>,
    gathered: &mut Vec<f32>,
    image_grads: &mut [f32],
) {
    let plane = g.output[0] * g.output[1];
    let (c_out, taps) = (g.channels_out, g.taps());
    let n = grads.len() / (c_out * plane);
    let width = n * plane;
    gathered.resize(c_out * width, 0.0);
    for (j, grad) in grads.chunks(c_out * plane).enumerate() {
        for (dst, src) in gathered.chunks_mut(width).zip(grad.chunks(plane)) {
            dst[j * plane..(j + 1) * plane].copy_from_slice(src);
        }
    }
    columns.resize(g.phased_len() + taps * width, 0.0);
    let (phased, columns) = columns.split_at_mut(g.phased_len());
    let lhs = Matrix::transposed(weight, taps); // [taps, c_out], read in place
    let rhs = Matrix::rows(gathered, width);
    gemm_into(
        columns,
        width,
        0,
        width,
        lhs,
        c_out,
        rhs,
        false,
        taps,
        gemm::Parallelism::None,
    );
    let in_image = image_grads.len() / n;
    let simd = Simd::detect();
    for (j, image_grad) in image_grads.chunks_mut(in_image).enumerate() {
        simd.run(
            #[inline(always)]
            || {
                if phased.is_empty() {
                    return col2im(columns, g, 0..g.output[0], image_grad, width, j * plane);
                }
                phased.fill(0.0);
                col2im(columns, g, 0..g.output[0], phased, width, j * plane);
                add_merged(phased, g, image_grad);
            },
        );
    }
}

/// A matrix read in place: `values[i * row_stride + j * column_stride]` is element `(i, j)`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    values: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major matrix with `row_stride` values per row.
    pub(crate) fn rows(values: &'a [f32], row_stride: usize) -> Self {
        Self {
            values,
            row_stride,
            column_stride: 1,
        }
    }

    /// The transpose of the row-major `[rows, columns]` matrix `values`.
    fn transposed(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row_stride: 1,
            column_stride: columns,
        }
    }

    /// Whether every element of a `[rows, columns]` view lies inside `values`.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        rows == 0
            || columns == 0
            || (rows - 1) * self.row_stride + (columns - 1) * self.column_stride < self.values.len()
    }
}

/// `out[:, offset..offset + width] (+)= lhs x rhs`: `out` is `[m, stride]` row-major, `lhs`
/// `[m, k]` and `rhs` `[k, width]`. With `accumulate` the product is added to what `out` holds
/// (the bias), else it overwrites it.
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)] // a gemm call, named
pub(crate) fn gemm_into(
    out: &mut [f32],
    stride: usize,
    offset: usize,
    width: usize,
    lhs: Matrix<'_>,
    k: usize,
    rhs: Matrix<'_>,
    accumulate: bool,
    m: usize,
    parallelism: gemm::Parallelism,
) {
    assert!(
        m == 0 || width == 0 || (m - 1) * stride + offset + width <= out.len(),
        "output out of bounds"
    );
    assert!(lhs.holds(m, k), "left operand out of bounds");
    assert!(rhs.holds(k, width), "right operand out of bounds");
    // SAFETY: the asserts above keep every element gemm touches inside the three slices: the
    // destination is rows 0..m, columns offset..offset + width of `out` (row stride `stride`), the
    // left operand the `[m, k]` view of `lhs`, the right operand the `[k, width]` view of `rhs`.
    // `out` is borrowed mutably, so it does not alias the other two.
    unsafe {
        gemm::gemm(
            m,
            width,
            k,
            out.as_mut_ptr().add(offset),
            1,
            stride as isize,
            accumulate,
            lhs.values.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{input_position, naive_input_grad, out_size, values};

    /// The convolution by definition, bounds-checked tap by tap.
    fn naive(input: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
        let ([ih, iw], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
        let mut out = vec![0f32; g.batch * g.channels_out * oh * ow];
        for n in 0..g.batch {
            for o in 0..g.channels_out {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut sum = bias.map_or(0.0, |b| b[o]);
                        for c in 0..g.channels_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let Some([iy, ix]) = input_position(g, [y, x], [ky, kx]) else {
                                        continue;
                                    };
                                    sum += weight[((o * g.channels_in + c) * kh + ky) * kw + kx]
                                        * input[((n * g.channels_in + c) * ih + iy) * iw + ix];
                                }
                            }
                        }
                        out[((n * g.channels_out + o) * oh + y) * ow + x] = sum;
                    }
                }
            }
        }
        out
    }

    /// The geometries both directions are tested on, at batch 1 and 3.
    fn geometries() -> Vec<Geometry> {
        // (channels in/out, input, kernel, stride, dilation, padding (begin, end) per axis)
        let cases = [
            ((3, 4), [9, 9], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
            ((3, 5), [13, 12], [7, 7], [2, 2], [1, 1], [(3, 3), (3, 3)]), // ResNet's stem
            ((4, 6), [8, 8], [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)]),   // a stride-2 3x3
            ((5, 3), [8, 7], [1, 1], [2, 2], [1, 1], [(0, 0), (0, 0)]),   // a 1x1 shortcut
            ((6, 4), [5, 6], [1, 1], [1, 1], [1, 1], [(0, 0), (0, 0)]),   // pointwise: no columns
            ((2, 3), [10, 11], [3, 3], [2, 2], [1, 1], [(0, 1), (0, 1)]), // asymmetric padding
            ((2, 2), [9, 8], [3, 2], [3, 1], [2, 1], [(2, 0), (0, 1)]),
            ((3, 2), [3, 3], [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)]), // kernel wider than the input
            ((2, 3), [3, 2], [3, 5], [1, 2], [1, 1], [(1, 1), (2, 3)]), // taps that only read padding
            ((2, 2), [6, 9], [3, 3], [2, 3], [2, 2], [(2, 1), (1, 2)]), // stride 3, dilation 2
            ((2, 3), [9, 9], [2, 2], [3, 3], [1, 1], [(0, 0), (0, 0)]), // stride past the kernel
            ((2, 3), [7, 6], [3, 3], [1, 1], [2, 2], [(2, 2), (2, 2)]), // rows as wide, dilated
            ((2, 2), [5, 4], [3, 4], [1, 1], [1, 1], [(0, 2), (1, 2)]), // rows as wide, asymmetric
        ];
        let mut geometries = Vec::new();
        for ((channels_in, channels_out), input, kernel, stride, dilation, padding) in cases {
            let output = [0, 1].map(|a| out_size(input[a], kernel[a], stride[a], dilation[a], padding[a]));
            for batch in [1, 3] {
                geometries.push(Geometry {
                    batch,
                    channels_in,
                    channels_out,
                    input,
                    output,
                    kernel,
                    stride,
                    dilation,
                    pad_begin: [padding[0].0, padding[1].0],
                });
            }
        }
        geometries
    }

    /// At batch 3 (every test plane is below [`GROUP_COLUMNS`]): one group of 3 images (1
    /// thread), groups of 2 and 1 (2 threads), one image after another with a parallel gemm (4
    /// threads), then one output row per chunk: `(column limit, threads)`.
    const PATHS: [(usize, usize); 4] = [(COLUMN_LIMIT, 1), (COLUMN_LIMIT, 2), (COLUMN_LIMIT, 4), (1, 1)];

    fn assert_close(got: &[f32], expected: &[f32], what: &str) {
        assert_eq!(got.len(), expected.len(), "{what}");
        for (i, (a, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{what}: [{i}] {a} vs {e}"
            );
        }
    }

    #[test]
    fn im2col_gemm_equals_the_definition() {
        for g in geometries() {
            let x = values(g.batch * g.channels_in * g.input[0] * g.input[1], 1);
            let w = values(g.channels_out * g.taps(), 2);
            let b = values(g.channels_out, 3);
            for bias in [Some(&b[..]), None] {
                let expected = naive(&x, &w, bias, &g);
                for (limit, threads) in PATHS {
                    let got = forward_f32_with(&x, &w, bias, &g, limit, threads);
                    let what = format!("{g:?} bias {} limit {limit} threads {threads}", bias.is_some());
                    assert_close(&got, &expected, &what);
                }
            }
        }
    }

    #[test]
    fn gemm_col2im_input_gradient_equals_the_definition() {
        for g in geometries() {
            let grad_out = values(g.batch * g.channels_out * g.output[0] * g.output[1], 4);
            let w = values(g.channels_out * g.taps(), 5);
            let expected = naive_input_grad(&grad_out, &w, &g, 1);
            assert!(
                expected.iter().any(|&v| v != 0.0),
                "{g:?}: a gradient that reaches the input"
            );
            for (limit, threads) in PATHS {
                let got = input_grad_f32_with(&grad_out, &w, &g, limit, threads);
                assert_close(&got, &expected, &format!("{g:?} limit {limit} threads {threads}"));
            }
        }
    }

    #[test]
    fn small_planes_are_grouped_within_the_limits() {
        let layer4 = Geometry {
            batch: 32,
            channels_in: 512,
            channels_out: 512,
            input: [7, 7],
            output: [7, 7],
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad_begin: [1, 1],
        };
        assert_eq!(
            layer4.images_per_group(COLUMN_LIMIT, 2),
            16,
            "a thread's share of the batch"
        );
        // 21 images make 1024 columns: 32 split into 2 groups of 16. The column limit allows
        // 18: 2 groups of 16 again; with 5 allowed, 7 groups of 5 (the last 2).
        assert_eq!(layer4.images_per_group(usize::MAX, 1), 16);
        assert_eq!(layer4.images_per_group(COLUMN_LIMIT, 1), 16);
        assert_eq!(layer4.images_per_group(4608 * 49 * 5, 1), 5);
        assert_eq!(layer4.images_per_group(1, 1), 1);
        let wide = Geometry {
            input: [14, 14],
            output: [14, 14],
            ..layer4
        };
        assert_eq!(wide.images_per_group(COLUMN_LIMIT, 2), 1, "196 positions");
        let three = Geometry { batch: 3, ..layer4 };
        assert_eq!(three.images_per_group(COLUMN_LIMIT, 2), 2);
        assert_eq!(three.images_per_group(COLUMN_LIMIT, 4), 1);
    }

    #[test]
    fn chunks_cover_every_output_row() {
        let g = Geometry {
            batch: 1,
            channels_in: 2,
            channels_out: 1,
            input: [10, 4],
            output: [10, 4],
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad_begin: [1, 1],
        };
        // 18 taps x 4 columns = 72 values per output row.
        assert_eq!(g.rows_per_chunk(72 * 3), 3);
        assert_eq!(g.rows_per_chunk(1), 1);
        assert_eq!(g.rows_per_chunk(usize::MAX), 10);
    }
}
