use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_mapping::{Mapping, OutputMapping};
use vprompt_prompt::{Phase, Prompt, PromptSpace, VisualPrompt};

use crate::error::{Result, TrainError};

/// A prompt, a frozen backbone and a mapping: `[0, 1]` pixels in, downstream logits out.
///
/// ```text
/// pixels --(Pixel space: prompt, clamp)--> normalise --(Normalized space: prompt)--> backbone
///        --> source outputs [B, S] --mapping--> logits [B, C]
/// ```
///
/// Only the prompt learns. Keep the backbone (and the mapping) on the plain device and the prompt on
/// the autodiff device: the backbone's weights then never enter the autodiff tape.
#[derive(Debug, Clone)]
pub struct PromptedClassifier<B: Backbone> {
    /// The learned prompt.
    pub prompt: Prompt,
    /// The frozen model.
    pub backbone: B,
    /// Source outputs to target classes.
    pub mapping: Mapping,
}

/// Checks that `mapping` reads `backbone`'s outputs.
pub(crate) fn check_mapping<B: Backbone>(backbone: &B, mapping: &Mapping) -> Result<()> {
    if mapping.source_dim() != backbone.output_dim() {
        return Err(TrainError::InvalidConfig(format!(
            "the mapping reads {} source outputs, backbone `{}` has {}",
            mapping.source_dim(),
            backbone.name(),
            backbone.output_dim()
        )));
    }
    Ok(())
}

impl<B: Backbone> PromptedClassifier<B> {
    /// Assembles a classifier, checking that the pieces fit: the prompt is made for the backbone's
    /// input size with 3 channels, and the mapping reads the backbone's outputs.
    pub fn new(prompt: Prompt, backbone: B, mapping: Mapping) -> Result<Self> {
        if prompt.image_size() != backbone.input_size() || prompt.channels() != 3 {
            return Err(TrainError::InvalidConfig(format!(
                "the prompt is made for {}-channel {:?} images, backbone `{}` takes 3-channel {:?}",
                prompt.channels(),
                prompt.image_size(),
                backbone.name(),
                backbone.input_size()
            )));
        }
        check_mapping(&backbone, &mapping)?;
        Ok(Self {
            prompt,
            backbone,
            mapping,
        })
    }

    /// The size `[height, width]` images should be prepared at (the prompt's input size: the
    /// backbone's, or the interior for shrink-and-frame).
    pub fn input_size(&self) -> [usize; 2] {
        self.prompt.input_size()
    }

    /// Number of target classes.
    pub fn num_classes(&self) -> usize {
        self.mapping.num_classes()
    }

    /// The backbone's input, prompted or not, from `[0, 1]` pixels.
    fn backbone_input(&self, pixels: Tensor<4>, phase: Option<Phase>) -> Result<Tensor<4>> {
        let prompt = |x: Tensor<4>| match phase {
            Some(phase) => self.prompt.apply(x, phase),
            None => self.prompt.unprompted(x),
        };
        Ok(match self.prompt.space() {
            PromptSpace::Pixel { .. } => self.backbone.normalize(prompt(pixels)?),
            PromptSpace::Normalized => prompt(self.backbone.normalize(pixels))?,
        })
    }

    /// Source outputs (and penultimate features) of the backbone, prompted in `phase` or, with
    /// `None`, unprompted.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`, `[h, w]` = [`input_size`](Self::input_size)
    /// - output: `([batch, feature_dim], [batch, S])`
    pub fn backbone_outputs(
        &self,
        pixels: Tensor<4>,
        phase: Option<Phase>,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        Ok(self
            .backbone
            .forward_features(self.backbone_input(pixels, phase)?)?)
    }

    /// Prompted logits.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`
    /// - output: `[batch, C]`
    pub fn forward(&self, pixels: Tensor<4>, phase: Phase) -> Result<Tensor<2>> {
        let (_, source) = self.backbone_outputs(pixels, Some(phase))?;
        Ok(self.mapping.forward(source)?)
    }

    /// Logits without the prompt (the same mapping): the unprompted baseline.
    pub fn forward_unprompted(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        let (_, source) = self.backbone_outputs(pixels, None)?;
        Ok(self.mapping.forward(source)?)
    }
}
