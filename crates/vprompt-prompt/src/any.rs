use burn::module::Module;
use burn::prelude::*;

use crate::conditional::{ConditionalPrompt, ConditionalPromptConfig};
use crate::error::{PromptError, Result};
use crate::full_image::{FullImagePrompt, FullImagePromptConfig};
use crate::padding::{PaddingPrompt, PaddingPromptConfig};
use crate::patch::{FixedPatchPrompt, FixedPatchPromptConfig, RandomPatchPrompt, RandomPatchPromptConfig};
use crate::shrink_frame::{ShrinkFramePrompt, ShrinkFramePromptConfig};
use crate::space::{Phase, PromptSpace};
use crate::visual_prompt::VisualPrompt;

/// Any prompt template's config: what a run config file names, and what a saved prompt file
/// records beside its values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PromptConfig {
    /// A frame over the image border (the paper's default).
    Padding(PaddingPromptConfig),
    /// A patch at a fixed position.
    FixedPatch(FixedPatchPromptConfig),
    /// A patch at a seeded random position per training batch.
    RandomPatch(RandomPatchPromptConfig),
    /// A perturbation of every pixel.
    FullImage(FullImagePromptConfig),
    /// A frame around the image shrunk to the interior.
    ShrinkFrame(ShrinkFramePromptConfig),
    /// A template's prompt plus a per-image one from a small generator.
    Conditional(ConditionalPromptConfig),
}

impl PromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        match self {
            PromptConfig::Padding(c) => c.validate(image_size),
            PromptConfig::FixedPatch(c) => c.validate(image_size),
            PromptConfig::RandomPatch(c) => c.validate(image_size),
            PromptConfig::FullImage(c) => c.validate(image_size),
            PromptConfig::ShrinkFrame(c) => c.validate(image_size),
            PromptConfig::Conditional(c) => c.validate(image_size),
        }
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<Prompt> {
        Ok(match self {
            PromptConfig::Padding(c) => Prompt::Padding(c.init(image_size, device)?),
            PromptConfig::FixedPatch(c) => Prompt::FixedPatch(c.init(image_size, device)?),
            PromptConfig::RandomPatch(c) => Prompt::RandomPatch(c.init(image_size, device)?),
            PromptConfig::FullImage(c) => Prompt::FullImage(c.init(image_size, device)?),
            PromptConfig::ShrinkFrame(c) => Prompt::ShrinkFrame(c.init(image_size, device)?),
            PromptConfig::Conditional(c) => Prompt::Conditional(c.init(image_size, device)?),
        })
    }

    /// Parses a config from JSON, e.g. `{"Padding": {"pad": 30}}`: the template's required fields
    /// must be given, omitted optional fields take their defaults, unknown fields are refused.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(PromptError::ConfigParse)
    }

    /// The config as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("prompt configs always serialise")
    }
}

macro_rules! impl_from {
    ($($variant:ident($prompt:ty, $config:ty)),+) => {$(
        impl From<$prompt> for Prompt {
            fn from(prompt: $prompt) -> Self { Prompt::$variant(prompt) }
        }
        impl From<$config> for PromptConfig {
            fn from(config: $config) -> Self { PromptConfig::$variant(config) }
        }
    )+};
}

impl_from!(
    Padding(PaddingPrompt, PaddingPromptConfig),
    FixedPatch(FixedPatchPrompt, FixedPatchPromptConfig),
    RandomPatch(RandomPatchPrompt, RandomPatchPromptConfig),
    FullImage(FullImagePrompt, FullImagePromptConfig),
    ShrinkFrame(ShrinkFramePrompt, ShrinkFramePromptConfig),
    Conditional(ConditionalPrompt, ConditionalPromptConfig)
);

/// Any prompt template, chosen at run time (from a config file or a saved prompt).
#[derive(Module, Debug)]
pub enum Prompt {
    /// A frame over the image border.
    Padding(PaddingPrompt),
    /// A patch at a fixed position.
    FixedPatch(FixedPatchPrompt),
    /// A patch at a seeded random position per training batch.
    RandomPatch(RandomPatchPrompt),
    /// A perturbation of every pixel.
    FullImage(FullImagePrompt),
    /// A frame around the image shrunk to the interior.
    ShrinkFrame(ShrinkFramePrompt),
    /// A template's prompt plus a per-image one from a small generator.
    Conditional(ConditionalPrompt),
}

/// Calls `$body` with `$p` bound to the inner prompt of whichever variant `$self` is.
macro_rules! dispatch {
    ($self:expr, $p:ident => $body:expr) => {
        match $self {
            Prompt::Padding($p) => $body,
            Prompt::FixedPatch($p) => $body,
            Prompt::RandomPatch($p) => $body,
            Prompt::FullImage($p) => $body,
            Prompt::ShrinkFrame($p) => $body,
            Prompt::Conditional($p) => $body,
        }
    };
}

impl Prompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> PromptConfig {
        dispatch!(self, p => p.config().clone().into())
    }

    /// Writes the evaluation-time perturbation as a PNG; see [`save_png`](crate::save_png).
    pub fn save_png(&self, path: impl AsRef<std::path::Path>) -> Result<f32> {
        crate::png::save_png(self, path)
    }
}

/// Gives each prompt type an inherent `num_params` (the paper's count of learned values), which
/// takes precedence over `Module::num_params` (a count of stored values: the frame templates
/// store a full-size tensor; in generic code write `VisualPrompt::num_params(&prompt)`), and
/// gives each template type the `save` of [`Prompt`].
macro_rules! inherent_methods {
    ($($prompt:ty),+) => {$(
        impl $prompt {
            /// Number of learned values, by the paper's formulas; see
            /// [`VisualPrompt::num_params`].
            pub fn num_params(&self) -> usize {
                VisualPrompt::num_params(self)
            }

            /// Writes the prompt and its config to a `.bpk` file; see [`Prompt::save`].
            pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
                Prompt::from(self.clone()).save(path)
            }
        }
    )+};
}

impl Prompt {
    /// Number of learned values, by the paper's formulas; see [`VisualPrompt::num_params`].
    pub fn num_params(&self) -> usize {
        VisualPrompt::num_params(self)
    }
}

inherent_methods!(
    PaddingPrompt,
    FixedPatchPrompt,
    RandomPatchPrompt,
    FullImagePrompt,
    ShrinkFramePrompt,
    ConditionalPrompt
);

impl VisualPrompt for Prompt {
    fn image_size(&self) -> [usize; 2] {
        dispatch!(self, p => p.image_size())
    }

    fn input_size(&self) -> [usize; 2] {
        dispatch!(self, p => p.input_size())
    }

    fn channels(&self) -> usize {
        dispatch!(self, p => p.channels())
    }

    fn space(&self) -> PromptSpace {
        dispatch!(self, p => p.space())
    }

    fn num_params(&self) -> usize {
        dispatch!(self, p => VisualPrompt::num_params(p))
    }

    fn perturbation(&self, phase: Phase) -> Tensor<4> {
        dispatch!(self, p => p.perturbation(phase))
    }

    fn apply(&self, images: Tensor<4>, phase: Phase) -> Result<Tensor<4>> {
        dispatch!(self, p => p.apply(images, phase))
    }

    fn unprompted(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        dispatch!(self, p => p.unprompted(images))
    }
}
