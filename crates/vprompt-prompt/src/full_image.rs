use burn::module::{Module, Param};
use burn::prelude::*;

use crate::error::Result;
use crate::space::{Phase, PromptInit, PromptSpace, check_image_size, check_positive};
use crate::visual_prompt::VisualPrompt;

const TEMPLATE: &str = "full-image";

vprompt_core::config! {
    /// A learned perturbation of every pixel (the "watermark" / "Full" baseline of SMM and
    /// adversarial reprogramming), `C * H * W` values.
    pub struct FullImagePromptConfig {
    }
    defaults {
        /// Image channels `C`.
        pub channels: usize = 3,
        /// Where the prompt is added.
        pub space: PromptSpace = PromptSpace::Normalized,
        /// Initial values.
        pub init: PromptInit = PromptInit::RANDN,
        /// Seed of the initial values.
        pub seed: u64 = 0,
    }
}

impl FullImagePromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        check_image_size(TEMPLATE, image_size)?;
        check_positive(TEMPLATE, "channels", self.channels)?;
        self.init.validate(TEMPLATE)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<FullImagePrompt> {
        self.validate(image_size)?;
        let [height, width] = image_size;
        let delta = self
            .init
            .sample([1, self.channels, height, width], self.seed, device);
        Ok(FullImagePrompt {
            delta: Param::from_tensor(delta),
            config: self.clone(),
            image_size,
        })
    }
}

/// A learned perturbation of the whole image.
#[derive(Module, Debug)]
pub struct FullImagePrompt {
    /// Learned values, `[1, C, H, W]`.
    pub(crate) delta: Param<Tensor<4>>,
    #[module(skip)]
    config: FullImagePromptConfig,
    #[module(skip)]
    image_size: [usize; 2],
}

impl FullImagePrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &FullImagePromptConfig {
        &self.config
    }
}

impl VisualPrompt for FullImagePrompt {
    fn image_size(&self) -> [usize; 2] {
        self.image_size
    }

    fn channels(&self) -> usize {
        self.config.channels
    }

    fn space(&self) -> PromptSpace {
        self.config.space
    }

    fn num_params(&self) -> usize {
        let [height, width] = self.image_size;
        self.config.channels * height * width
    }

    fn perturbation(&self, _phase: Phase) -> Tensor<4> {
        self.delta.val()
    }
}
