use burn::module::Module;
use burn::prelude::*;

use crate::error::{PromptError, Result};
use crate::space::{Phase, PromptSpace, add_in_space};

/// A learnable, input-agnostic perturbation of images (Bahng et al., equation 3.1: `x + v_phi`).
///
/// A prompt is made for one image size (the backbone's input size) and channel count. Its only
/// parameters are the learned pixels; everything constant (masks, positions) is computed once
/// at `init`.
pub trait VisualPrompt: Module {
    /// The size `[height, width]` of the prompted images (the backbone's input size).
    fn image_size(&self) -> [usize; 2];

    /// The size `[height, width]` images should be delivered at. Equal to [`image_size`] except
    /// for shrink-and-frame, which places the image inside the frame: a data pipeline that
    /// resizes to this size once saves the per-batch resize.
    ///
    /// [`image_size`]: VisualPrompt::image_size
    fn input_size(&self) -> [usize; 2] {
        self.image_size()
    }

    /// Number of image channels `C`.
    fn channels(&self) -> usize;

    /// Where the prompt is added: before or after the backbone's normalisation.
    fn space(&self) -> PromptSpace;

    /// Number of learned values, by the paper's formulas (section 3.4): `C * p^2` for a patch,
    /// `2Cp(H - p) + 2Cp(W - p)` for padding (69,840 for 224 x 224 and p = 30).
    fn num_params(&self) -> usize;

    /// The perturbation added to every image of the batch in `phase`, zero outside the prompt.
    ///
    /// # Shapes
    /// - output: `[1, C, H, W]`
    fn perturbation(&self, phase: Phase) -> Tensor<4>;

    /// Prompts a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, C, H, W]` (for shrink-and-frame, any `[batch, C, h, w]`)
    /// - output: `[batch, C, H, W]`
    ///
    /// # Errors
    /// [`PromptError::InputShape`] if the images do not have the prompt's channels and size.
    fn apply(&self, images: Tensor<4>, phase: Phase) -> Result<Tensor<4>> {
        check_input(&images, self.channels(), self.image_size())?;
        Ok(add_in_space(images, self.perturbation(phase), self.space()))
    }

    /// The same images without the prompt, as the backbone would see them: checked and passed
    /// through, or for shrink-and-frame resized into the zero frame. The unprompted baseline uses
    /// it, so prompted and unprompted accuracy are measured on the same pipeline.
    ///
    /// # Shapes
    /// - images: as for [`apply`](VisualPrompt::apply)
    /// - output: `[batch, C, H, W]`
    fn unprompted(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        check_input(&images, self.channels(), self.image_size())?;
        Ok(images)
    }
}

/// Checks images against `[batch, channels, height, width]`.
pub(crate) fn check_input(images: &Tensor<4>, channels: usize, [height, width]: [usize; 2]) -> Result<()> {
    let actual = images.dims();
    if actual[1] != channels || actual[2] != height || actual[3] != width {
        return Err(PromptError::InputShape {
            channels,
            height,
            width,
            actual,
        });
    }
    Ok(())
}
