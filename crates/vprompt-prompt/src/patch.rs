use burn::module::{Module, Param};
use burn::prelude::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::error::Result;
use crate::geometry::{check_patch, place_patch};
use crate::space::{Phase, PromptInit, PromptSpace, check_image_size, check_positive};
use crate::visual_prompt::VisualPrompt;

const FIXED: &str = "fixed-patch";
const RANDOM: &str = "random-patch";

vprompt_core::config! {
    /// A learned `size x size` patch at a fixed position (`FixedPatchPrompter`).
    pub struct FixedPatchPromptConfig {
        /// Patch side `p` in pixels; `p = 1` is the paper's single-pixel prompt (figure 8).
        pub size: usize,
    }
    defaults {
        /// Top-left corner `[row, col]`; the released code puts the patch at the top-left.
        pub position: [usize; 2] = [0, 0],
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

impl FixedPatchPromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        check_image_size(FIXED, image_size)?;
        check_positive(FIXED, "size", self.size)?;
        check_positive(FIXED, "channels", self.channels)?;
        check_patch(FIXED, self.size, self.position, image_size)?;
        self.init.validate(FIXED)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<FixedPatchPrompt> {
        self.validate(image_size)?;
        let patch = self
            .init
            .sample([1, self.channels, self.size, self.size], self.seed, device);
        Ok(FixedPatchPrompt {
            patch: Param::from_tensor(patch),
            config: self.clone(),
            image_size,
        })
    }
}

/// A learned patch at a fixed position.
#[derive(Module, Debug)]
pub struct FixedPatchPrompt {
    /// Learned values, `[1, C, p, p]`.
    pub(crate) patch: Param<Tensor<4>>,
    #[module(skip)]
    config: FixedPatchPromptConfig,
    #[module(skip)]
    image_size: [usize; 2],
}

impl FixedPatchPrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &FixedPatchPromptConfig {
        &self.config
    }
}

impl VisualPrompt for FixedPatchPrompt {
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
        self.config.channels * self.config.size * self.config.size
    }

    fn perturbation(&self, _phase: Phase) -> Tensor<4> {
        place_patch(self.patch.val(), self.config.position, self.image_size)
    }
}

/// Where a random-location patch goes at evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum EvalLocation {
    /// Always at this top-left corner `[row, col]`: evaluation does not depend on batch order.
    Fixed {
        /// Top-left corner `[row, col]`.
        position: [usize; 2],
    },
    /// A seeded draw per evaluation batch (what the released code does, but reproducible).
    Seeded {
        /// Seed of the evaluation draws, independent of the training draws.
        seed: u64,
    },
}

vprompt_core::config! {
    /// A learned `size x size` patch whose location is drawn anew for every training batch
    /// (`RandomPatchPrompter`). The released code draws from an unseeded RNG, also at evaluation;
    /// here every draw is a function of the seed and the step, so training is reproducible and a
    /// resumed run draws the same locations.
    pub struct RandomPatchPromptConfig {
        /// Patch side `p` in pixels.
        pub size: usize,
    }
    defaults {
        /// Location at evaluation.
        pub eval_location: EvalLocation = EvalLocation::Fixed { position: [0, 0] },
        /// Image channels `C`.
        pub channels: usize = 3,
        /// Where the prompt is added.
        pub space: PromptSpace = PromptSpace::Normalized,
        /// Initial values.
        pub init: PromptInit = PromptInit::RANDN,
        /// Seed of the initial values and of the training locations.
        pub seed: u64 = 0,
    }
}

impl RandomPatchPromptConfig {
    /// Checks the config against the image size it will be used with.
    pub fn validate(&self, image_size: [usize; 2]) -> Result<()> {
        check_image_size(RANDOM, image_size)?;
        check_positive(RANDOM, "size", self.size)?;
        check_positive(RANDOM, "channels", self.channels)?;
        check_patch(RANDOM, self.size, [0, 0], image_size)?;
        if let EvalLocation::Fixed { position } = self.eval_location {
            check_patch(RANDOM, self.size, position, image_size)?;
        }
        self.init.validate(RANDOM)
    }

    /// Validates, then creates the prompt for `[height, width]` images on `device`.
    pub fn init(&self, image_size: [usize; 2], device: &Device) -> Result<RandomPatchPrompt> {
        self.validate(image_size)?;
        let patch = self
            .init
            .sample([1, self.channels, self.size, self.size], self.seed, device);
        Ok(RandomPatchPrompt {
            patch: Param::from_tensor(patch),
            config: self.clone(),
            image_size,
        })
    }
}

/// A learned patch at a seeded random location per batch.
#[derive(Module, Debug)]
pub struct RandomPatchPrompt {
    /// Learned values, `[1, C, p, p]`.
    pub(crate) patch: Param<Tensor<4>>,
    #[module(skip)]
    config: RandomPatchPromptConfig,
    #[module(skip)]
    image_size: [usize; 2],
}

/// Distinguishes the training stream from the evaluation stream of draws.
const TRAIN_STREAM: u64 = 0x7261_6e64_7472_6e00;
const EVAL_STREAM: u64 = 0x7261_6e64_6576_6c00;

impl RandomPatchPrompt {
    /// The config this prompt was made from.
    pub fn config(&self) -> &RandomPatchPromptConfig {
        &self.config
    }

    /// The top-left corner `[row, col]` of the patch in `phase`.
    pub fn location(&self, phase: Phase) -> [usize; 2] {
        let (seed, stream, index) = match (phase, self.config.eval_location) {
            (Phase::Train { step }, _) => (self.config.seed, TRAIN_STREAM, step),
            (Phase::Eval { .. }, EvalLocation::Fixed { position }) => return position,
            (Phase::Eval { batch }, EvalLocation::Seeded { seed }) => (seed, EVAL_STREAM, batch),
        };
        let mut rng = StdRng::seed_from_u64(mix(mix(seed ^ stream) ^ index));
        let [height, width] = self.image_size;
        let size = self.config.size;
        [
            rng.random_range(0..=height - size),
            rng.random_range(0..=width - size),
        ]
    }
}

/// SplitMix64's finaliser: decorrelates nearby seeds and steps.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl VisualPrompt for RandomPatchPrompt {
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
        self.config.channels * self.config.size * self.config.size
    }

    fn perturbation(&self, phase: Phase) -> Tensor<4> {
        place_patch(self.patch.val(), self.location(phase), self.image_size)
    }
}
