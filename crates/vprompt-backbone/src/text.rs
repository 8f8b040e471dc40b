use std::path::Path;

use burn::module::Module;
use burn::prelude::*;

use crate::error::{BackboneError, Result};
use crate::generated::TextModel;
use crate::preset::{Modality, Preset};
use crate::weights::{self, WeightsFile};

/// A frozen CLIP-style text encoder: token ids (CLIP BPE, padded with 0 to the context length) to
/// a projected text embedding. Used once per class to build a text-prompt head, never per batch.
#[derive(Module, Debug)]
pub struct TextEncoder {
    model: TextModel,
    #[module(skip)]
    preset: Preset,
    /// CLIP's logit scale from the weights, if they carried one.
    #[module(skip)]
    logit_scale: Option<f32>,
}

/// OpenAI CLIP's trained logit scale (its learned `logit_scale` reaches the clamp at `ln 100`).
pub const CLIP_LOGIT_SCALE: f32 = 100.0;

impl TextEncoder {
    /// A text preset with weights from a `.bpk` file written by `vprompt import`, or straight from
    /// a CLIP checkpoint (transformers `model.safetensors`, open_clip `open_clip_pytorch_model.bin`;
    /// detected by content, read through the preset's key map).
    /// With the `hub` feature, `weights` may also be a Hugging Face Hub name,
    /// `hf:ORG/REPO[/FILE][@REVISION]`.
    pub fn load(preset: Preset, weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut model = TextModel::new(preset, device).ok_or_else(|| not_a_text_preset(preset))?;
        let weights = weights::resolve(preset, weights.as_ref())?;
        let logit_scale = model.load(&WeightsFile::Path(weights), preset)?;
        Ok(Self {
            model,
            preset,
            logit_scale,
        }
        .freeze())
    }

    /// The preset's architecture with seeded random weights `N(0, std^2)`: **not pretrained**.
    pub fn with_random_weights(preset: Preset, seed: u64, std: f64, device: &Device) -> Result<Self> {
        let model = TextModel::new(preset, device).ok_or_else(|| not_a_text_preset(preset))?;
        Ok(Self {
            model: weights::randomize(model, seed, std, device)?,
            preset,
            logit_scale: None,
        }
        .freeze())
    }

    /// The preset this encoder was built from.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// The scale of zero-shot logits, `scale * cos(image, text)`: `exp(logit_scale)` of the CLIP
    /// checkpoint the weights came from, or [`CLIP_LOGIT_SCALE`] (100) for weights without one.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale.unwrap_or(CLIP_LOGIT_SCALE)
    }

    /// Number of token positions (77 for CLIP).
    pub fn context_length(&self) -> usize {
        self.preset.input_size()[1]
    }

    /// Size of the embedding.
    pub fn output_dim(&self) -> usize {
        self.preset.output_dim()
    }

    /// Encodes token ids.
    ///
    /// # Shapes
    /// - tokens: `[batch, context_length]`
    /// - output: `[batch, output_dim]`
    ///
    /// # Errors
    /// [`BackboneError::InputShape`] for another context length or an empty batch.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<2>> {
        let dims = tokens.dims();
        if dims[0] == 0 || dims[1] != self.context_length() {
            return Err(BackboneError::InputShape {
                backbone: self.preset.name().to_string(),
                expected: format!("token ids [batch, {}]", self.context_length()),
                actual: dims.to_vec(),
            });
        }
        Ok(self.model.forward(tokens))
    }
}

fn not_a_text_preset(preset: Preset) -> BackboneError {
    debug_assert_eq!(preset.modality(), Modality::Image);
    BackboneError::WrongModality {
        preset: preset.name(),
        actual: "an image model",
        constructor: "ImageBackbone",
    }
}
