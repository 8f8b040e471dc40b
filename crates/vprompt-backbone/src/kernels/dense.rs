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
//! exceed [`COLUMN_LIMIT`]; a 1 x 1, stride-1, unpadded convolution needs no columns at all.

use rayon::prelude::*;

use super::Geometry;

/// Most `f32`s in one image's column buffer (16 MiB): larger images are done in chunks of
/// output rows. ResNet-18's layers at 224 px fit whole (at most 7.4 MiB).
pub(crate) const COLUMN_LIMIT: usize = 4 << 20;

impl Geometry {
    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    fn taps(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// A 1 x 1, stride-1, unpadded convolution: the image itself is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad_begin == [0, 0]
    }

    /// Output rows per chunk, so that a chunk's columns stay within `limit` values.
    fn rows_per_chunk(&self, limit: usize) -> usize {
        let row = (self.taps() * self.output[1]).max(1);
        (limit / row).clamp(1, self.output[0].max(1))
    }
}

/// The convolution `out[n, o, y, x] = bias[o] + sum_{c, ky, kx} weight[o, c, ky, kx] *
/// input[n, c, y*sy + ky*dy - py, x*sx + kx*dx - px]` (taps outside the input read 0).
///
/// `input` is `[batch, c_in, in_h, in_w]`, `weight` `[c_out, c_in, k_h, k_w]`, `bias` `[c_out]`,
/// all contiguous; the result is `[batch, c_out, out_h, out_w]`.
pub(crate) fn forward_f32(input: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
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
    let mut output = vec![0f32; g.batch * out_image];
    if out_image == 0 {
        return output;
    }
    if in_image == 0 || g.taps() == 0 {
        // No input values: every output is its bias.
        if let Some(bias) = bias {
            for image in output.chunks_mut(out_image) {
                fill_bias(image, bias, out_plane);
            }
        }
        return output;
    }
    if g.batch >= threads {
        // Enough images for every thread: one thread per image, a single-threaded gemm each.
        let images = output.par_chunks_mut(out_image).zip(input.par_chunks(in_image));
        images.for_each_init(Vec::new, |columns, (out, image)| {
            convolve_image(
                image,
                weight,
                bias,
                g,
                limit,
                columns,
                out,
                gemm::Parallelism::None,
            )
        });
    } else {
        let mut columns = Vec::new();
        let parallelism = gemm::Parallelism::Rayon(0);
        for (out, image) in output.chunks_mut(out_image).zip(input.chunks(in_image)) {
            convolve_image(image, weight, bias, g, limit, &mut columns, out, parallelism);
        }
    }
    output
}

/// Sets every value of the `[c_out, plane]` image `out` to its channel's bias.
fn fill_bias(out: &mut [f32], bias: &[f32], plane: usize) {
    for (channel, &b) in out.chunks_mut(plane).zip(bias) {
        channel.fill(b);
    }
}

/// One image of [`forward_f32`]: `out` (`[c_out, out_h * out_w]`) = bias + weight x columns,
/// chunk by chunk of output rows. `columns` is reused across the images of one thread.
#[allow(clippy::too_many_arguments)] // the pieces of one call, named
fn convolve_image(
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    limit: usize,
    columns: &mut Vec<f32>,
    out: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    let [out_h, out_w] = g.output;
    let plane = out_h * out_w;
    if let Some(bias) = bias {
        fill_bias(out, bias, plane);
    }
    let read_out = bias.is_some();
    let (m, k) = (g.channels_out, g.taps());
    if g.is_pointwise() {
        gemm_into(
            out,
            plane,
            0,
            plane,
            weight,
            k,
            image,
            plane,
            read_out,
            m,
            parallelism,
        );
        return;
    }
    let rows = g.rows_per_chunk(limit);
    for first in (0..out_h).step_by(rows) {
        let last = (first + rows).min(out_h);
        let width = (last - first) * out_w;
        columns.resize(k * width, 0.0);
        let columns = &mut columns[..k * width];
        im2col(image, g, first..last, columns);
        gemm_into(
            out,
            plane,
            first * out_w,
            width,
            weight,
            k,
            columns,
            width,
            read_out,
            m,
            parallelism,
        );
    }
}

/// Fills `columns` (`[c_in * k_h * k_w, rows.len() * out_w]`) with the input values each output
/// position of `rows` reads, 0 where a tap lands in the padding.
fn im2col(image: &[f32], g: &Geometry, rows: std::ops::Range<usize>, columns: &mut [f32]) {
    let [in_h, in_w] = g.input;
    let [k_h, k_w] = g.kernel;
    let [s_y, s_x] = g.stride;
    let [d_y, d_x] = g.dilation;
    let [p_y, p_x] = g.pad_begin;
    let out_w = g.output[1];
    let width = rows.len() * out_w;
    for (tap, column_row) in columns.chunks_mut(width).enumerate() {
        let (channel, ky, kx) = (tap / (k_h * k_w), tap / k_w % k_h, tap % k_w);
        let plane = &image[channel * in_h * in_w..(channel + 1) * in_h * in_w];
        // Output columns whose tap `kx` lands inside the input: `x*s_x + kx*d_x - p_x` in
        // `[0, in_w)`.
        let shift = kx * d_x;
        let x_begin = p_x.saturating_sub(shift).div_ceil(s_x).min(out_w);
        let x_end = if in_w + p_x > shift {
            (in_w + p_x - shift).div_ceil(s_x).min(out_w)
        } else {
            0
        }
        .max(x_begin);
        for (y, dst) in rows.clone().zip(column_row.chunks_mut(out_w)) {
            let iy = (y * s_y + ky * d_y) as isize - p_y as isize;
            if iy < 0 || iy >= in_h as isize {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * in_w..(iy as usize + 1) * in_w];
            dst[..x_begin].fill(0.0);
            dst[x_end..].fill(0.0);
            if x_begin == x_end {
                continue;
            }
            let first = x_begin * s_x + shift - p_x;
            if s_x == 1 {
                dst[x_begin..x_end].copy_from_slice(&src[first..first + (x_end - x_begin)]);
            } else {
                for (d, s) in dst[x_begin..x_end]
                    .iter_mut()
                    .zip(src[first..].iter().step_by(s_x))
                {
                    *d = *s;
                }
            }
        }
    }
}

/// `out[:, offset..offset + width] (+)= weight x rhs`: `out` is `[m, stride]` row-major, `weight`
/// `[m, k]` and `rhs` `[k, width]` with row stride `rhs_stride`, all contiguous in their rows.
/// With `accumulate` the product is added to what `out` holds (the bias), else it overwrites it.
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)] // a gemm call, named
fn gemm_into(
    out: &mut [f32],
    stride: usize,
    offset: usize,
    width: usize,
    weight: &[f32],
    k: usize,
    rhs: &[f32],
    rhs_stride: usize,
    accumulate: bool,
    m: usize,
    parallelism: gemm::Parallelism,
) {
    assert!(
        m == 0 || (m - 1) * stride + offset + width <= out.len(),
        "output out of bounds"
    );
    assert!(weight.len() >= m * k, "weight out of bounds");
    assert!(
        k == 0 || (k - 1) * rhs_stride + width <= rhs.len(),
        "columns out of bounds"
    );
    // SAFETY: the asserts above keep every element gemm touches inside the three slices: the
    // destination is rows 0..m, columns offset..offset + width of `out` (row stride `stride`), the
    // left operand rows 0..m of length k of `weight`, the right operand rows 0..k, columns
    // 0..width of `rhs` (row stride `rhs_stride`). `out` is borrowed mutably, so it does not
    // alias the other two.
    unsafe {
        gemm::gemm(
            m,
            width,
            k,
            out.as_mut_ptr().add(offset),
            1,
            stride as isize,
            accumulate,
            weight.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_stride as isize,
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
    use crate::kernels::test_values::{input_position, out_size, values};

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

    #[test]
    fn im2col_gemm_equals_the_definition() {
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
        ];
        for ((channels_in, channels_out), input, kernel, stride, dilation, padding) in cases {
            let output = [0, 1].map(|a| out_size(input[a], kernel[a], stride[a], dilation[a], padding[a]));
            for batch in [1, 3] {
                let g = Geometry {
                    batch,
                    channels_in,
                    channels_out,
                    input,
                    output,
                    kernel,
                    stride,
                    dilation,
                    pad_begin: [padding[0].0, padding[1].0],
                };
                let x = values(batch * channels_in * input[0] * input[1], 1);
                let w = values(channels_out * channels_in * kernel[0] * kernel[1], 2);
                let b = values(channels_out, 3);
                for bias in [Some(&b[..]), None] {
                    let expected = naive(&x, &w, bias, &g);
                    // Whole images, in parallel (1 thread) or one after another with a parallel
                    // gemm (4 threads), then one output row per chunk.
                    for (limit, threads) in [(COLUMN_LIMIT, 1), (COLUMN_LIMIT, 4), (1, 1)] {
                        let got = forward_f32_with(&x, &w, bias, &g, limit, threads);
                        assert_eq!(got.len(), expected.len());
                        for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
                            assert!(
                                (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                "{g:?} bias {} limit {limit} threads {threads}: [{i}] {a} vs {e}",
                                bias.is_some()
                            );
                        }
                    }
                }
            }
        }
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
