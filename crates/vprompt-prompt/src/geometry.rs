//! Where a prompt's pixels sit on the image: the frame mask shared by padding and
//! shrink-and-frame, and the placement of a patch.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::ops::PadMode;

use crate::error::{PromptError, Result};
use crate::space::PromptInit;

/// Checks that a frame of width `pad` leaves a non-empty interior: `2 * pad < height, width`.
pub(crate) fn check_frame(template: &'static str, pad: usize, [height, width]: [usize; 2]) -> Result<()> {
    if 2 * pad >= height || 2 * pad >= width {
        return Err(PromptError::FrameTooWide {
            template,
            pad,
            height,
            width,
            max_pad: (height.min(width) - 1) / 2,
        });
    }
    Ok(())
}

/// Number of pixels in a frame of width `pad` around a `height x width` image, per channel:
/// `2p(H - p) + 2p(W - p)`.
pub(crate) fn frame_pixels(pad: usize, [height, width]: [usize; 2]) -> usize {
    2 * pad * (height - pad) + 2 * pad * (width - pad)
}

/// A constant mask that is 1 on the frame of width `pad` and 0 inside it.
///
/// # Shapes
/// - output: `[1, channels, height, width]`
fn frame_mask(channels: usize, pad: usize, [height, width]: [usize; 2], device: &Device) -> Tensor<4> {
    let plane: Vec<f32> = (0..height * width)
        .map(|k| {
            let (i, j) = (k / width, k % width);
            let on_frame = i < pad || j < pad || i >= height - pad || j >= width - pad;
            if on_frame { 1.0 } else { 0.0 }
        })
        .collect();
    let values = plane.repeat(channels);
    Tensor::from_data(TensorData::new(values, [1, channels, height, width]), device)
}

/// Checks that a `size x size` patch at `(row, col)` fits in the image.
pub(crate) fn check_patch(
    template: &'static str,
    size: usize,
    [row, col]: [usize; 2],
    [height, width]: [usize; 2],
) -> Result<()> {
    if row + size > height || col + size > width {
        return Err(PromptError::PatchOutOfBounds {
            template,
            size,
            row,
            col,
            height,
            width,
        });
    }
    Ok(())
}

/// Places a patch on a zero canvas with its top-left corner at `(row, col)`. Differentiable with
/// respect to the patch. The caller has checked that the patch fits.
///
/// # Shapes
/// - patch: `[1, C, p, p]`
/// - output: `[1, C, height, width]`
pub(crate) fn place_patch(
    patch: Tensor<4>,
    [row, col]: [usize; 2],
    [height, width]: [usize; 2],
) -> Tensor<4> {
    let [_, _, ph, pw] = patch.dims();
    patch.pad(
        [(row, height - row - ph), (col, width - col - pw)],
        PadMode::Constant(0.0),
    )
}

/// Learned values on a frame of width `pad`: stored at full image size and multiplied by a
/// constant frame mask, so the interior receives exactly zero gradient and stays exactly zero
/// under any optimiser whose update is zero for a zero gradient (SGD with or without momentum,
/// Adam). Shared by padding and shrink-and-frame.
#[derive(Module, Debug)]
pub(crate) struct Frame {
    /// Learned values, `[1, C, H, W]`; only the frame is used.
    pub(crate) delta: Param<Tensor<4>>,
    /// 1 on the frame, 0 inside, `[1, C, H, W]`.
    pub(crate) mask: Tensor<4>,
}

impl Frame {
    /// Draws the initial values and builds the mask. The caller has validated the sizes.
    pub(crate) fn new(
        init: &PromptInit,
        seed: u64,
        channels: usize,
        pad: usize,
        image_size: [usize; 2],
        device: &Device,
    ) -> Self {
        let [height, width] = image_size;
        let mask = frame_mask(channels, pad, image_size, device);
        let values = init.sample([1, channels, height, width], seed, device) * mask.clone();
        Self {
            delta: Param::from_tensor(values),
            mask,
        }
    }

    /// The frame values, zero inside.
    ///
    /// # Shapes
    /// - output: `[1, C, H, W]`
    pub(crate) fn values(&self) -> Tensor<4> {
        self.delta.val() * self.mask.clone()
    }
}
