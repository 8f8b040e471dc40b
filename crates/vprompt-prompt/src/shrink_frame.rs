use burn::module::Module;
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};

use crate::error::{PromptError, Result};
use crate::geometry::{Frame, check_frame, frame_pixels};
use crate::space::{Phase, PromptInit, PromptSpace, add_in_space, check_image_size, check_positive};
use crate::visual_prompt::VisualPrompt;

const TEMPLATE: &str = "shrink-frame";

/// How images are resized into the frame's interior.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear, half-pixel centres (`align_corners = false`).
    Bilinear,
    /// Bicubic, half-pixel centres (`align_corners = false`).
    Bicubic,
}

impl ResizeFilter {
    fn mode(self) -> InterpolateMode {
        match self {
            ResizeFilter::Nearest => InterpolateMode::Nearest,
            ResizeFilter::Bilinear => InterpolateMode::Bilinear,
            ResizeFilter::Bicubic => InterpolateMode::Bicubic,
        }
    }
}

vprompt_core::config! {
    /// Shrink-and-frame (EVP, ILM-VP's expansive prompt): the image is resized to the inner
    /// `(H - 2p) x (W - 2p)` area and zero-padded back to `H x W`, and only the frame of width `p`
    /// is learned, so the prompt never covers image content. Defaults follow EVP: added to `[0, 1]`
    /// pixels (zero padding is black), zero initialisation.
    pub struct ShrinkFramePromptConfig {
        /// Frame width `p` in pixels; `2p` must be smaller than both image sides.
        pub pad: usize,
    }
    defaults {
        /// Filter used when images arrive at another size than the interior.
        pub resize: ResizeFilter = ResizeFilter::Bilinear,
        /// Image channels `C`.
        pub channels: usize = 3,
        /// Where the prompt is added (and where the zero padding is: black in `Pixel`, the mean
        /// colour in `Normalized`).
        pub space: PromptSpace = PromptSpace::Pixel { clamp: false },
        /// Initial values.
        pub init: PromptInit = PromptInit::Zeros,
        /// Seed of the initial values.
        pub seed: u64 = 0,
    }
}

impl ShrinkFramePromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        check_image_size(TEMPLATE, image_size)?;
        check_positive(TEMPLATE, "pad", self.pad)?;
        check_positive(TEMPLATE, "channels", self.channels)?;
        check_frame(TEMPLATE, self.pad, image_size)?;
        self.init.validate(TEMPLATE)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<ShrinkFramePrompt> {
        self.validate(image_size)?;
        Ok(ShrinkFramePrompt {
            frame: Frame::new(&self.init, self.seed, self.channels, self.pad, image_size, device),
            config: self.clone(),
            image_size,
        })
    }
}

/// A learned frame around a shrunken image.
#[derive(Module, Debug)]
pub struct ShrinkFramePrompt {
    /// The learned frame.
    pub(crate) frame: Frame,
    #[module(skip)]
    config: ShrinkFramePromptConfig,
    #[module(skip)]
    image_size: [usize; 2],
}

impl ShrinkFramePrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &ShrinkFramePromptConfig {
        &self.config
    }

    /// Resizes images to the interior (unless they already have its size) and zero-pads them to
    /// the full image size.
    ///
    /// # Shapes
    /// - images: `[batch, C, h, w]`
    /// - output: `[batch, C, H, W]`
    pub fn frame_images(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        let [batch, channels, h, w] = images.dims();
        let [height, width] = self.image_size;
        if channels != self.config.channels || h == 0 || w == 0 {
            return Err(PromptError::InputShape {
                channels: self.config.channels,
                height,
                width,
                actual: [batch, channels, h, w],
            });
        }
        let inner = self.input_size();
        let images = if [h, w] == inner {
            images
        } else {
            let options = InterpolateOptions::new(self.config.resize.mode())
                .with_align_corners(false)
                .with_output_size(inner);
            interpolate(images, options)
        };
        let p = self.config.pad;
        Ok(images.pad([(p, p), (p, p)], PadMode::Constant(0.0)))
    }
}

impl VisualPrompt for ShrinkFramePrompt {
    fn image_size(&self) -> [usize; 2] {
        self.image_size
    }

    fn input_size(&self) -> [usize; 2] {
        let [height, width] = self.image_size;
        [height - 2 * self.config.pad, width - 2 * self.config.pad]
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

    fn apply(&self, images: Tensor<4>, phase: Phase) -> Result<Tensor<4>> {
        let framed = self.frame_images(images)?;
        Ok(add_in_space(framed, self.perturbation(phase), self.space()))
    }

    fn unprompted(&self, images: Tensor<4>) -> Result<Tensor<4>> {
        self.frame_images(images)
    }
}
