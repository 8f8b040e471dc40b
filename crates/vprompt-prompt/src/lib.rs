//! Visual prompt templates: learnable, input-agnostic pixel perturbations that steer a frozen
//! vision model to a new task (Bahng et al., "Visual Prompting: Modifying Pixel Space to Adapt
//! Pre-trained Models", sections 3.2 and 3.4).
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: forwarded to burn. The code is the same for every
//!   backend; the device a prompt is created on decides where it runs.
//!
//! # Templates
//! | config | learned values | paper |
//! |---|---|---|
//! | [`PaddingPromptConfig`] | a frame of width `p`: `2Cp(H-p) + 2Cp(W-p)` (69,840 for 224, p = 30) | default template |
//! | [`FixedPatchPromptConfig`] | a `p x p` patch, top-left by default: `C p^2` | fixed patch, single pixel (p = 1) |
//! | [`RandomPatchPromptConfig`] | a `p x p` patch at a seeded location per training batch: `C p^2` | random patch |
//! | [`FullImagePromptConfig`] | every pixel: `C H W` | "watermark" baseline of follow-ups |
//! | [`ShrinkFramePromptConfig`] | a frame around the image shrunk to the interior | EVP, ILM-VP |
//! | [`ConditionalPromptConfig`] | any template above plus a per-image prompt on its pixels from a small convolutional generator (3,203 more for 3 channels) | the paper's future work; BlackVIP's Coordinator |
//!
//! Every config has `validate(image_size)` and `init(image_size, device)`, which validates before
//! allocating anything. [`PromptConfig`] and [`Prompt`] hold any template chosen at run time;
//! [`Prompt::save`] and [`Prompt::load`] keep a prompt and its config in one Burnpack file, and
//! [`save_png`] shows the learned pixels. [`Prompt::learned`] and [`Prompt::with_learned`] read and
//! replace the learned values for optimisers outside autodiff (black-box training).
//!
//! ```
//! use burn::prelude::*;
//! use vprompt_prompt::{PaddingPromptConfig, Phase, VisualPrompt};
//!
//! let device = Device::flex();
//! let prompt = PaddingPromptConfig::new(30).init([224, 224], &device)?;
//! assert_eq!(prompt.num_params(), 69_840);
//! let images = Tensor::<4>::zeros([2, 3, 224, 224], &device);
//! let prompted = prompt.apply(images, Phase::Eval { batch: 0 })?;
//! assert_eq!(prompted.dims(), [2, 3, 224, 224]);
//! # Ok::<(), vprompt_prompt::PromptError>(())
//! ```

mod any;
mod conditional;
mod error;
mod file;
mod full_image;
mod geometry;
mod learned;
mod padding;
mod patch;
mod png;
mod shrink_frame;
mod space;
mod statistics;
mod visual_prompt;

pub use any::{Prompt, PromptConfig};
pub use conditional::{ConditionalPrompt, ConditionalPromptConfig};
pub use error::{PromptError, Result};
pub use file::METADATA_KEY;
pub use full_image::{FullImagePrompt, FullImagePromptConfig};
pub use padding::{PaddingPrompt, PaddingPromptConfig};
pub use patch::{
    EvalLocation, FixedPatchPrompt, FixedPatchPromptConfig, RandomPatchPrompt, RandomPatchPromptConfig,
};
pub use png::{save_png, symmetric_scale};
pub use shrink_frame::{ResizeFilter, ShrinkFramePrompt, ShrinkFramePromptConfig};
pub use space::{Phase, PromptInit, PromptSpace};
pub use statistics::PromptStatistics;
pub use visual_prompt::VisualPrompt;
