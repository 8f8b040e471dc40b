use burn::module::Module;
use burn::prelude::*;

use crate::error::Result;
use crate::geometry::{Frame, check_frame, frame_pixels};
use crate::space::{Phase, PromptInit, PromptSpace, check_image_size, check_positive};
use crate::visual_prompt::VisualPrompt;

const TEMPLATE: &str = "padding";

vprompt_core::config! {
    /// A learned frame of width `pad` drawn over the border of the image: the paper's default
    /// template (`PadPrompter`, p = 30).
    pub struct PaddingPromptConfig {
        /// Frame width `p` in pixels; `2p` must be smaller than both image sides.
        pub pad: usize,
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

impl PaddingPromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        check_image_size(TEMPLATE, image_size)?;
        check_positive(TEMPLATE, "pad", self.pad)?;
        check_positive(TEMPLATE, "channels", self.channels)?;
        check_frame(TEMPLATE, self.pad, image_size)?;
        self.init.validate(TEMPLATE)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<PaddingPrompt> {
        self.validate(image_size)?;
        Ok(PaddingPrompt {
            frame: Frame::new(&self.init, self.seed, self.channels, self.pad, image_size, device),
            config: self.clone(),
            image_size,
        })
    }
}

/// A learned frame over the image border; the interior stays exactly zero during training.
#[derive(Module, Debug)]
pub struct PaddingPrompt {
    /// The learned frame.
    pub(crate) frame: Frame,
    #[module(skip)]
    config: PaddingPromptConfig,
    #[module(skip)]
    image_size: [usize; 2],
}

impl PaddingPrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &PaddingPromptConfig {
        &self.config
    }
}

impl VisualPrompt for PaddingPrompt {
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
        self.config.channels * frame_pixels(self.config.pad, self.image_size)
    }

    fn perturbation(&self, _phase: Phase) -> Tensor<4> {
        self.frame.values()
    }
}
