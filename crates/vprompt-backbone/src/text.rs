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
}

impl TextEncoder {
    /// A text preset with weights from a `.bpk` file written by `vprompt import`.
    pub fn load(preset: Preset, weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let mut model = TextModel::new(preset, device).ok_or_else(|| not_a_text_preset(preset))?;
        model.load(&WeightsFile::Path(weights.as_ref().to_path_buf()), preset)?;
        Ok(Self { model, preset }.freeze())
    }

    /// The preset's architecture with seeded random weights `N(0, std^2)`: **not pretrained**.
    pub fn with_random_weights(preset: Preset, seed: u64, std: f64, device: &Device) -> Result<Self> {
        let model = TextModel::new(preset, device).ok_or_else(|| not_a_text_preset(preset))?;
        Ok(Self {
            model: weights::randomize(model, seed, std, device)?,
            preset,
        }
        .freeze())
    }

    /// The preset this encoder was built from.
    pub fn preset(&self) -> Preset {
        self.preset
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
