use burn::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use crate::error::{PromptError, Result};

/// Where the prompt is added in the preprocessing chain.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PromptSpace {
    /// Added after the backbone's own normalisation (`(x - mean) / std`), unbounded: the paper's
    /// choice (Bahng et al., section 3.2 and the released code).
    Normalized,
    /// Added to `[0, 1]` pixels before the backbone's normalisation (EVP, AutoVP). With
    /// `clamp`, the prompted image is clamped back to `[0, 1]`, so it stays a valid image.
    Pixel {
        /// Clamp the prompted image to `[0, 1]`.
        clamp: bool,
    },
}

/// How the learnable values start.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PromptInit {
    /// Seeded normal draws `N(0, std^2)`; `std = 1` is the released code's `torch.randn`.
    Normal {
        /// Standard deviation, finite and `>= 0`.
        std: f64,
    },
    /// All zeros (ILM-VP, EVP, AutoVP): the prompted image starts equal to the input.
    Zeros,
}

impl PromptInit {
    /// The paper's initialisation, `randn`.
    pub const RANDN: PromptInit = PromptInit::Normal { std: 1.0 };

    pub(crate) fn validate(&self, template: &'static str) -> Result<()> {
        match *self {
            PromptInit::Normal { std } if !(std.is_finite() && std >= 0.0) => {
                Err(PromptError::InvalidInitStd { template, std })
            }
            _ => Ok(()),
        }
    }

    /// Draws initial values of the given shape on the host from `seed`, so that the same config
    /// gives the same prompt on every backend.
    pub(crate) fn sample(&self, shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        let count = shape.iter().product();
        let values: Vec<f32> = match *self {
            PromptInit::Zeros => vec![0.0; count],
            PromptInit::Normal { std } => {
                let mut rng = StdRng::seed_from_u64(seed);
                (0..count)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * std) as f32
                    })
                    .collect()
            }
        };
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// Which batch a prompt is applied to. Templates with random parts (the random-location patch)
/// derive their draws from it and their seed, so a run needs no hidden RNG state to be
/// reproducible or resumed; the other templates ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Training, at global optimisation step `step` (counted from 0 over the whole run).
    Train {
        /// Global step index.
        step: u64,
    },
    /// Evaluation of batch number `batch` of an evaluation pass.
    Eval {
        /// Batch index within the pass.
        batch: u64,
    },
}

impl PromptSpace {
    /// Adds a perturbation to images that are already in this space (`[0, 1]` pixels or
    /// normalised), clamping to `[0, 1]` for `Pixel { clamp: true }`. Templates use it in
    /// `apply`; black-box training uses it to prompt one batch with many candidate prompts.
    ///
    /// # Shapes
    /// - images: `[batch, C, H, W]`
    /// - delta: `[1, C, H, W]`, broadcast over the batch (or `[batch, C, H, W]`)
    /// - output: `[batch, C, H, W]`
    pub fn add(self, images: Tensor<4>, delta: Tensor<4>) -> Tensor<4> {
        let prompted = images + delta;
        match self {
            PromptSpace::Pixel { clamp: true } => prompted.clamp(0.0, 1.0),
            _ => prompted,
        }
    }
}

/// [`PromptSpace::add`] with the space last, as the templates call it.
pub(crate) fn add_in_space(images: Tensor<4>, delta: Tensor<4>, space: PromptSpace) -> Tensor<4> {
    space.add(images, delta)
}

/// Checks that an image size has no empty side.
pub(crate) fn check_image_size(template: &'static str, [height, width]: [usize; 2]) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(PromptError::EmptyImage {
            template,
            height,
            width,
        });
    }
    Ok(())
}

/// Checks that a size field is positive.
pub(crate) fn check_positive(template: &'static str, field: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(PromptError::ZeroSize { template, field });
    }
    Ok(())
}
