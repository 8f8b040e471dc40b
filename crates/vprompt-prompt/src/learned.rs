//! Read and replace a prompt's learned values directly, for optimisers that do not go through
//! autodiff (the zeroth-order optimisers of black-box prompting perturb and update these values
//! with forward queries only).

use burn::module::Param;
use burn::prelude::*;

use crate::any::Prompt;
use crate::error::{PromptError, Result};

impl Prompt {
    /// The stored learned values: `[1, C, p, p]` for a patch, `[1, C, H, W]` for the other
    /// templates (the frame templates store a full-size tensor of which only the frame is used; see
    /// [`learned_mask`](Prompt::learned_mask)); for a conditional prompt `[1, 1, 1, n]`, the
    /// template's values flattened and then each generator weight and bias flattened.
    pub fn learned(&self) -> Tensor<4> {
        match self {
            Prompt::Conditional(p) => {
                let mut parts = vec![flat(p.template().learned())];
                for layer in &p.generator.layers {
                    parts.push(flat(layer.weight.val()));
                    parts.push(flat(layer.bias.val().unsqueeze::<4>()));
                }
                Tensor::cat(parts, 3)
            }
            Prompt::Padding(p) => p.frame.delta.val(),
            Prompt::ShrinkFrame(p) => p.frame.delta.val(),
            Prompt::FixedPatch(p) => p.patch.val(),
            Prompt::RandomPatch(p) => p.patch.val(),
            Prompt::FullImage(p) => p.delta.val(),
        }
    }

    /// 1 where a learned value reaches the image, 0 where it is stored but unused (the interior of
    /// a frame); the shape of [`learned`](Prompt::learned). A zeroth-order optimiser perturbs only
    /// the used values, so its search dimension is the template's
    /// [`num_params`](Prompt::num_params).
    pub fn learned_mask(&self) -> Tensor<4> {
        match self {
            Prompt::Padding(p) => p.frame.mask.clone(),
            Prompt::ShrinkFrame(p) => p.frame.mask.clone(),
            Prompt::Conditional(p) => {
                let template = flat(p.template().learned_mask());
                let generator = Tensor::ones([1, 1, 1, p.generator_params()], &template.device());
                Tensor::cat(vec![template, generator], 3)
            }
            _ => self.learned().ones_like(),
        }
    }

    /// The same prompt with other learned values, which must have the shape of
    /// [`learned`](Prompt::learned). The parameter keeps its id, so optimiser state stays attached.
    /// Values in the unused interior of a frame are zeroed, as at `init`.
    ///
    /// # Errors
    /// [`PromptError::LearnedShape`] if the shape differs.
    pub fn with_learned(self, values: Tensor<4>) -> Result<Prompt> {
        let expected = self.learned().dims();
        if values.dims() != expected {
            return Err(PromptError::LearnedShape {
                expected,
                actual: values.dims(),
            });
        }
        let replace = |param: Param<Tensor<4>>, values: Tensor<4>| param.map(|_| values);
        Ok(match self {
            Prompt::Padding(mut p) => {
                let masked = values * p.frame.mask.clone();
                p.frame.delta = replace(p.frame.delta, masked);
                Prompt::Padding(p)
            }
            Prompt::ShrinkFrame(mut p) => {
                let masked = values * p.frame.mask.clone();
                p.frame.delta = replace(p.frame.delta, masked);
                Prompt::ShrinkFrame(p)
            }
            Prompt::FixedPatch(mut p) => {
                p.patch = replace(p.patch, values);
                Prompt::FixedPatch(p)
            }
            Prompt::RandomPatch(mut p) => {
                p.patch = replace(p.patch, values);
                Prompt::RandomPatch(p)
            }
            Prompt::FullImage(mut p) => {
                p.delta = replace(p.delta, values);
                Prompt::FullImage(p)
            }
            Prompt::Conditional(mut p) => {
                let mut start = 0;
                // The next `count` values, as a `[1, 1, 1, count]` row.
                let mut take = |count: usize| {
                    let part = values.clone().narrow(3, start, count);
                    start += count;
                    part
                };
                let template = p.template.remove(0);
                let shape = template.learned().dims();
                let part = take(shape.iter().product()).reshape(shape);
                p.template = vec![template.with_learned(part)?];
                for layer in &mut p.generator.layers {
                    let shape = layer.weight.val().dims();
                    let weight = take(shape.iter().product()).reshape(shape);
                    let bias = take(shape[0]).reshape([shape[0]]);
                    layer.weight = replace(layer.weight.clone(), weight);
                    layer.bias = layer.bias.clone().map(|_| bias);
                }
                Prompt::Conditional(p)
            }
        })
    }
}

/// `[1, 1, 1, n]`: a tensor's values in order, as one row.
fn flat<const D: usize>(tensor: Tensor<D>) -> Tensor<4> {
    let count = tensor.shape().num_elements();
    tensor.reshape([1, 1, 1, count])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        PaddingPromptConfig, Phase, PromptConfig, PromptInit, RandomPatchPromptConfig, VisualPrompt,
    };
    use vprompt_testkit::to_vec;

    #[test]
    fn learned_values_round_trip_and_frames_stay_masked() {
        let device = Device::flex();
        let prompt: Prompt = PromptConfig::from(PaddingPromptConfig::new(1).with_init(PromptInit::Zeros))
            .init([4, 4], &device)
            .unwrap();
        assert_eq!(prompt.learned().dims(), [1, 3, 4, 4]);
        let mask = to_vec(prompt.learned_mask());
        assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), prompt.num_params());
        let updated = prompt
            .with_learned(Tensor::<4>::ones([1, 3, 4, 4], &device))
            .unwrap();
        assert_eq!(to_vec(updated.learned()), mask, "interior zeroed");
        assert_eq!(to_vec(updated.perturbation(Phase::Eval { batch: 0 })), mask);

        let patch: Prompt = PromptConfig::from(RandomPatchPromptConfig::new(2))
            .init([4, 4], &device)
            .unwrap();
        assert_eq!(to_vec(patch.learned_mask()), vec![1.0; 12]);
        let err = patch
            .with_learned(Tensor::<4>::ones([1, 3, 4, 4], &device))
            .unwrap_err();
        assert!(err.to_string().contains("[1, 3, 2, 2]"), "{err}");
    }
}
