use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_mapping::{Mapping, MappingInput, OutputMapping};
use vprompt_prompt::{Phase, Prompt, PromptSpace, VisualPrompt};

use crate::error::{Result, TrainError};

/// A prompt, a frozen backbone and a mapping: `[0, 1]` pixels in, downstream logits out.
///
/// ```text
/// pixels --(Pixel space: prompt, clamp)--> normalise --(Normalized space: prompt)--> backbone
///        --> source outputs [B, S] --mapping--> logits [B, C]
/// ```
///
/// Built on the design's traits: the prompt is any [`VisualPrompt`] template (held as the
/// run-time-chosen [`Prompt`], which is what checkpoints save and load), the backbone any
/// [`Backbone`], the mapping any [`OutputMapping`] (held as [`Mapping`], likewise). Without a
/// prompt ([`unprompted`](Self::unprompted)) it is the frozen model and its head alone: the
/// paper's baselines (first-N, a fitted mapping, CLIP's text prompts).
///
/// Only the prompt learns, and a learned mapping ([`Mapping::is_learned`]: FullyMap, a linear
/// probe) with it. Keep the backbone (and a fixed mapping) on the plain device and the prompt on
/// the autodiff device: the backbone's weights then never enter the autodiff tape.
#[derive(Debug, Clone)]
pub struct PromptedClassifier<B: Backbone> {
    /// The learned prompt; `None` for the unprompted classifier.
    pub prompt: Option<Prompt>,
    /// The frozen model.
    pub backbone: B,
    /// Source outputs to target classes.
    pub mapping: Mapping,
}

/// One image's predicted class and its softmax probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The predicted class (index into the class names).
    pub class: usize,
    /// Its probability.
    pub probability: f32,
}

/// Checks that `mapping` reads `backbone`'s outputs (or its features, for a linear probe).
pub(crate) fn check_mapping<B: Backbone>(backbone: &B, mapping: &Mapping) -> Result<()> {
    let (what, size) = match mapping.input() {
        MappingInput::SourceOutputs => ("source outputs", backbone.output_dim()),
        MappingInput::Features => ("features", backbone.feature_dim()),
    };
    if mapping.source_dim() != size {
        return Err(TrainError::Mismatch(format!(
            "the mapping reads {} {what}, backbone `{}` has {size}",
            mapping.source_dim(),
            backbone.name(),
        )));
    }
    Ok(())
}

/// The mapping's logits from a backbone's `(features, source outputs)`: it reads the one its
/// [`Mapping::input`] names.
///
/// # Shapes
/// - outputs: `([batch, F], [batch, S])`
/// - output: `[batch, C]`
pub(crate) fn map_outputs(
    mapping: &Mapping,
    (features, source): (Tensor<2>, Tensor<2>),
) -> Result<Tensor<2>> {
    Ok(mapping.forward(match mapping.input() {
        MappingInput::SourceOutputs => source,
        MappingInput::Features => features,
    })?)
}

impl<B: Backbone> PromptedClassifier<B> {
    /// Assembles a classifier, checking that the pieces fit: the prompt is made for the backbone's
    /// input size with 3 channels, and the mapping reads the backbone's outputs.
    pub fn new(prompt: Prompt, backbone: B, mapping: Mapping) -> Result<Self> {
        if prompt.image_size() != backbone.input_size() || prompt.channels() != 3 {
            return Err(TrainError::Mismatch(format!(
                "the prompt is made for {}-channel {:?} images, backbone `{}` takes 3-channel {:?}",
                prompt.channels(),
                prompt.image_size(),
                backbone.name(),
                backbone.input_size()
            )));
        }
        check_mapping(&backbone, &mapping)?;
        Ok(Self {
            prompt: Some(prompt),
            backbone,
            mapping,
        })
    }

    /// The frozen model and its head without a prompt, checking that the mapping reads the
    /// backbone's outputs.
    pub fn unprompted(backbone: B, mapping: Mapping) -> Result<Self> {
        check_mapping(&backbone, &mapping)?;
        Ok(Self {
            prompt: None,
            backbone,
            mapping,
        })
    }

    /// The same classifier with the prompt (and a learned mapping) off the autodiff tape
    /// (`Module::valid`), for evaluating while training.
    pub fn valid(&self) -> Self {
        Self {
            prompt: self.prompt.as_ref().map(Module::valid),
            backbone: self.backbone.clone(),
            mapping: if self.mapping.is_learned() {
                self.mapping.valid()
            } else {
                self.mapping.clone()
            },
        }
    }

    /// The prompt, or an error for the unprompted classifier (in code that trains one).
    pub fn learned_prompt(&self) -> Result<&Prompt> {
        self.prompt
            .as_ref()
            .ok_or_else(|| TrainError::Mismatch("this classifier has no prompt to train".into()))
    }

    /// The size `[height, width]` images should be prepared at: the prompt's input size (the
    /// backbone's, or the interior for shrink-and-frame), the backbone's without a prompt.
    pub fn input_size(&self) -> [usize; 2] {
        self.prompt
            .as_ref()
            .map_or(self.backbone.input_size(), VisualPrompt::input_size)
    }

    /// Number of target classes.
    pub fn num_classes(&self) -> usize {
        self.mapping.num_classes()
    }

    /// The backbone's input from `[0, 1]` pixels: prompted in `phase`, or (with `None`, or
    /// without a prompt) through the same pipeline unprompted.
    fn backbone_input(&self, pixels: Tensor<4>, phase: Option<Phase>) -> Result<Tensor<4>> {
        let Some(prompt) = &self.prompt else {
            return Ok(self.backbone.normalize(pixels));
        };
        let prompt_in = |x: Tensor<4>| match phase {
            Some(phase) => prompt.apply(x, phase),
            None => prompt.unprompted(x),
        };
        Ok(match prompt.space() {
            PromptSpace::Pixel { .. } => self.backbone.normalize(prompt_in(pixels)?),
            PromptSpace::Normalized => prompt_in(self.backbone.normalize(pixels))?,
        })
    }

    /// Source outputs (and penultimate features) of the backbone, prompted in `phase` or, with
    /// `None`, unprompted.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`, `[h, w]` = [`input_size`](Self::input_size)
    /// - output: `([batch, feature_dim], [batch, S])`
    pub fn backbone_outputs(
        &self,
        pixels: Tensor<4>,
        phase: Option<Phase>,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        Ok(self
            .backbone
            .forward_features(self.backbone_input(pixels, phase)?)?)
    }

    /// Prompted logits with the backbone's work split over devices (data parallel): the prompt is
    /// applied on this classifier's device, the prompted batch is cut into `1 + replicas.len()`
    /// contiguous parts, part 0 runs through this classifier's backbone and part k through
    /// `replicas[k - 1]` (a copy of the backbone on another device), and the source outputs come
    /// back to this device for the mapping. Every move between devices is on the autodiff tape,
    /// so one backward pass runs each part's backbone gradient on its own device and sums the
    /// prompt's gradient here. The same values as [`forward`](Self::forward) up to each device's
    /// rounding; with no replicas, `forward` itself.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`
    /// - output: `[batch, C]`
    pub fn forward_data_parallel(
        &self,
        pixels: Tensor<4>,
        phase: Phase,
        replicas: &[Replica<B>],
    ) -> Result<Tensor<2>> {
        if replicas.is_empty() {
            return self.forward(pixels, phase);
        }
        let input = self.backbone_input(pixels, Some(phase))?;
        let home = input.device();
        let batch = input.dims()[0];
        let parts = replicas.len() + 1;
        let (mut features, mut sources) = (Vec::with_capacity(parts), Vec::with_capacity(parts));
        for k in 0..parts {
            let (start, end) = (k * batch / parts, (k + 1) * batch / parts);
            if start == end {
                continue;
            }
            let part = input.clone().slice(start..end);
            let (f, source) = match k {
                0 => self.backbone.forward_features(part)?,
                k => {
                    let replica = &replicas[k - 1];
                    let (f, source) = replica
                        .backbone
                        .forward_features(part.to_device(&replica.device))?;
                    (f.to_device(&home), source.to_device(&home))
                }
            };
            features.push(f);
            sources.push(source);
        }
        map_outputs(&self.mapping, (Tensor::cat(features, 0), Tensor::cat(sources, 0)))
    }

    /// Prompted logits (unprompted ones without a prompt).
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`
    /// - output: `[batch, C]`
    pub fn forward(&self, pixels: Tensor<4>, phase: Phase) -> Result<Tensor<2>> {
        map_outputs(&self.mapping, self.backbone_outputs(pixels, Some(phase))?)
    }

    /// Logits without the prompt (the same mapping): the unprompted baseline.
    pub fn forward_unprompted(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        map_outputs(&self.mapping, self.backbone_outputs(pixels, None)?)
    }

    /// Each image's most probable class under the softmax of [`forward`](Self::forward).
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`
    pub fn predict(&self, pixels: Tensor<4>, phase: Phase) -> Result<Vec<Prediction>> {
        let classes = self.num_classes();
        let probabilities = burn::tensor::activation::softmax(self.forward(pixels, phase)?, 1)
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 probabilities");
        Ok(probabilities
            .chunks(classes)
            .map(|row| {
                let class = (0..classes).fold(0, |best, k| if row[k] > row[best] { k } else { best });
                Prediction {
                    class,
                    probability: row[class],
                }
            })
            .collect())
    }

    /// What the backbone sees, back in `[0, 1]` pixel units (a `Normalized` prompt is mapped back
    /// through the inverse normalisation): for showing prompted images.
    ///
    /// # Shapes
    /// - pixels, output: `[batch, 3, h, w]`
    pub fn prompted_pixels(&self, pixels: Tensor<4>, phase: Phase) -> Result<Tensor<4>> {
        match self.prompt.as_ref().map(VisualPrompt::space) {
            Some(PromptSpace::Normalized) => {
                let normalized = self.backbone_input(pixels, Some(phase))?;
                Ok(self.backbone.normalization().invert(normalized))
            }
            Some(PromptSpace::Pixel { .. }) => {
                Ok(self.prompt.as_ref().expect("matched").apply(pixels, phase)?)
            }
            None => Ok(pixels),
        }
    }
}

/// A frozen copy of a classifier's backbone on another device, for
/// [`PromptedClassifier::forward_data_parallel`].
#[derive(Debug, Clone)]
pub struct Replica<B: Backbone> {
    /// The device its inputs go to: the autodiff twin of the backbone's device when training.
    pub device: Device,
    /// The backbone, with its weights on the plain device.
    pub backbone: B,
}

impl<B: Backbone> Replica<B> {
    /// A copy of `backbone` on `device` (a plain device; inputs go to its autodiff twin when
    /// `autodiff`).
    pub fn new(backbone: &B, device: &Device, autodiff: bool) -> Self {
        Self {
            device: if autodiff {
                device.clone().autodiff()
            } else {
                device.clone()
            },
            backbone: backbone.clone().fork(device),
        }
    }
}
