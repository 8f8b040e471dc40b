use burn::module::Module;
use burn::prelude::*;

use crate::error::{BackboneError, Result};
use crate::normalization::Normalization;
use crate::preset::OutputKind;

/// A frozen, pretrained image model with its own preprocessing: what a visual prompt steers.
///
/// Implement it for an architecture vprompt has no preset for (see the `own_onnx_backbone`
/// example): wrap the burn-onnx generated model, state its input size, normalisation and output,
/// and forward normalised images. Load the weights on a plain (non-autodiff) device or call
/// [`Module::freeze`]: the prompt is the only thing that learns, and BatchNorm must use its running
/// statistics (`freeze`, not `no_grad`).
pub trait Backbone: Module {
    /// A short name for logs and run directories.
    fn name(&self) -> &str;

    /// Input size `[height, width]` (the image size the prompt is made for).
    fn input_size(&self) -> [usize; 2];

    /// The normalisation the weights were trained with.
    fn normalization(&self) -> &Normalization;

    /// Logits or an embedding.
    fn output_kind(&self) -> OutputKind;

    /// Size of the output `S`: number of classes, or embedding size.
    fn output_dim(&self) -> usize;

    /// Size of the penultimate features (the linear-probe input); the output size when the model
    /// exposes no separate features.
    fn feature_dim(&self) -> usize {
        self.output_dim()
    }

    /// Class names, for backbones that output logits.
    fn class_names(&self) -> Option<&[String]> {
        None
    }

    /// Runs the model on normalised images, returning the penultimate features and the outputs
    /// in one pass.
    ///
    /// # Shapes
    /// - images: `[batch, 3, H, W]`, already normalised
    /// - output: `([batch, feature_dim], [batch, output_dim])`
    ///
    /// # Errors
    /// [`BackboneError::InputShape`] for images of another size or channel count.
    fn forward_features(&self, images: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>)>;

    /// Runs the model on normalised images.
    ///
    /// # Shapes
    /// - images: `[batch, 3, H, W]`, already normalised
    /// - output: `[batch, output_dim]`
    fn forward_normalized(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        Ok(self.forward_features(images)?.1)
    }

    /// Normalises `[0, 1]` pixels the way this backbone expects.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, H, W]`
    /// - output: `[batch, 3, H, W]`
    fn normalize(&self, pixels: Tensor<4>) -> Tensor<4> {
        self.normalization().apply(pixels)
    }

    /// Normalises `[0, 1]` pixels and runs the model.
    fn forward(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        self.forward_normalized(self.normalize(pixels))
    }
}

/// Checks images against `[batch >= 1, 3, height, width]`.
pub fn check_image_input(backbone: &str, images: &Tensor<4>, [height, width]: [usize; 2]) -> Result<()> {
    let dims = images.dims();
    if dims[0] == 0 || dims[1] != 3 || dims[2] != height || dims[3] != width {
        return Err(BackboneError::InputShape {
            backbone: backbone.to_string(),
            expected: format!("[batch, 3, {height}, {width}]"),
            actual: dims.to_vec(),
        });
    }
    Ok(())
}
