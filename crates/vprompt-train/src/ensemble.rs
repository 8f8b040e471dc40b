//! Prompt ensembles (the paper's future work): several trained prompts, each with its mapping, on
//! one frozen backbone, combined at inference by averaging their mapped class probabilities.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use vprompt_backbone::Backbone;
use vprompt_core::{Quiet, Task};
use vprompt_data::BatchLoader;
use vprompt_mapping::{Mapping, OutputMapping};
use vprompt_prompt::{Phase, Prompt, VisualPrompt};

use crate::classifier::{Prediction, PromptedClassifier};
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Tally};

/// Prompts (other seeds, templates or sizes) with their mappings over one frozen backbone:
/// `p(class | x) = mean_k softmax(member_k(x))`.
///
/// The members share the backbone (held once) and must take images of one size (a data split is
/// prepared once) and score the same classes.
#[derive(Debug, Clone)]
pub struct Ensemble<B: Backbone> {
    backbone: B,
    members: Vec<(Prompt, Mapping)>,
}

/// An ensemble's accuracy beside each member's, from one pass over the data.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleEvaluation {
    /// The averaged probabilities' (its loss is the mean of `-log p(true class)`).
    pub ensemble: Evaluation,
    /// Each member alone, in order.
    pub members: Vec<Evaluation>,
}

impl EnsembleEvaluation {
    /// The members' mean top-1.
    pub fn mean_member_top1(&self) -> f64 {
        self.members.iter().map(|m| m.top1).sum::<f64>() / self.members.len().max(1) as f64
    }
}

impl<B: Backbone> Ensemble<B> {
    /// An ensemble of trained classifiers over the first one's backbone (load them all with the
    /// same backbone: only its name and input size can be checked here).
    ///
    /// # Errors
    /// [`TrainError::Mismatch`] for no members, a member without a prompt, or members that differ
    /// in backbone, input size or class count.
    pub fn new(classifiers: Vec<PromptedClassifier<B>>) -> Result<Self> {
        let mut classifiers = classifiers.into_iter();
        let first = classifiers
            .next()
            .ok_or_else(|| TrainError::Mismatch("an ensemble needs at least one member".into()))?;
        let mut members = Vec::new();
        let PromptedClassifier {
            prompt,
            backbone,
            mapping,
        } = first;
        let ensemble_of = |k: usize, prompt: Option<Prompt>| {
            prompt.ok_or_else(|| TrainError::Mismatch(format!("ensemble member {k} has no prompt")))
        };
        members.push((ensemble_of(0, prompt)?, mapping));
        for (k, member) in classifiers.enumerate() {
            if member.backbone.name() != backbone.name()
                || member.backbone.input_size() != backbone.input_size()
            {
                return Err(TrainError::Mismatch(format!(
                    "ensemble member {} runs backbone `{}` at {:?}, member 0 `{}` at {:?}",
                    k + 1,
                    member.backbone.name(),
                    member.backbone.input_size(),
                    backbone.name(),
                    backbone.input_size()
                )));
            }
            members.push((ensemble_of(k + 1, member.prompt)?, member.mapping));
        }
        Self::from_parts(backbone, members)
    }

    /// An ensemble of `(prompt, mapping)` members over `backbone`.
    ///
    /// # Errors
    /// As [`new`](Self::new), and for a mapping that does not read the backbone's outputs.
    pub fn from_parts(backbone: B, members: Vec<(Prompt, Mapping)>) -> Result<Self> {
        let Some((prompt, mapping)) = members.first() else {
            return Err(TrainError::Mismatch(
                "an ensemble needs at least one member".into(),
            ));
        };
        let (size, classes) = (prompt.input_size(), mapping.num_classes());
        for (k, (prompt, mapping)) in members.iter().enumerate() {
            // Checks the prompt's size and the mapping's inputs against the backbone.
            PromptedClassifier::new(prompt.clone(), backbone.clone(), mapping.clone())?;
            if prompt.input_size() != size || mapping.num_classes() != classes {
                return Err(TrainError::Mismatch(format!(
                    "ensemble member {k} takes {:?} images and scores {} classes, member 0 {size:?} and \
                     {classes}",
                    prompt.input_size(),
                    mapping.num_classes()
                )));
            }
        }
        Ok(Self { backbone, members })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: an ensemble has a member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The size `[height, width]` images are prepared at (every member's).
    pub fn input_size(&self) -> [usize; 2] {
        self.members[0].0.input_size()
    }

    /// Number of target classes.
    pub fn num_classes(&self) -> usize {
        self.members[0].1.num_classes()
    }

    /// Member `k` as a classifier of its own.
    pub fn member(&self, k: usize) -> Option<PromptedClassifier<B>> {
        self.members.get(k).map(|(prompt, mapping)| PromptedClassifier {
            prompt: Some(prompt.clone()),
            backbone: self.backbone.clone(),
            mapping: mapping.clone(),
        })
    }

    /// Each member's logits and the ensemble's probabilities for one batch (`batch`: the index of
    /// the batch, which random-patch prompts place their patch by).
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`, `[h, w]` = [`input_size`](Self::input_size)
    /// - output: (`len()` x `[batch, C]`, `[batch, C]`)
    pub fn forward(&self, pixels: Tensor<4>, batch: u64) -> Result<(Vec<Tensor<2>>, Tensor<2>)> {
        let mut logits = Vec::with_capacity(self.members.len());
        let mut sum: Option<Tensor<2>> = None;
        for k in 0..self.members.len() {
            let member = self.member(k).expect("in range");
            let z = member.forward(pixels.clone(), Phase::Eval { batch })?;
            let p = softmax(z.clone(), 1);
            sum = Some(match sum {
                Some(sum) => sum + p,
                None => p,
            });
            logits.push(z);
        }
        let mean = sum.expect("an ensemble has a member") / self.members.len() as f32;
        Ok((logits, mean))
    }

    /// Each image's most probable class under the averaged probabilities.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, h, w]` in `[0, 1]`
    pub fn predict(&self, pixels: Tensor<4>) -> Result<Vec<Prediction>> {
        let classes = self.num_classes();
        let (_, probabilities) = self.forward(pixels, 0)?;
        let probabilities = probabilities
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

    /// The ensemble's and each member's accuracy on every image of `loader`, in one pass.
    pub fn evaluate(&self, loader: &BatchLoader, device: &Device) -> Result<EnsembleEvaluation> {
        self.evaluate_with(loader, device, &mut Quiet)
    }

    /// [`evaluate`](Self::evaluate), advancing `task` by each batch's images.
    pub fn evaluate_with(
        &self,
        loader: &BatchLoader,
        device: &Device,
        task: &mut dyn Task,
    ) -> Result<EnsembleEvaluation> {
        let classes = self.num_classes();
        if loader.data().classes.len() != classes {
            return Err(TrainError::Mismatch(format!(
                "{} has {} classes, the ensemble {classes}",
                loader.data().source,
                loader.data().classes.len(),
            )));
        }
        let mut ensemble = Tally::new(classes);
        let mut members = vec![Tally::new(classes); self.members.len()];
        let host = |t: Tensor<2>| t.into_data().try_into_vec_as::<f32>().expect("float logits");
        for (k, batch) in loader.epoch(0, 0, device).enumerate() {
            let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
            let (logits, mean) = self.forward(batch.images, k as u64)?;
            for (tally, z) in members.iter_mut().zip(logits) {
                tally.add(&host(z), &labels);
            }
            // Log-probabilities as logits: their softmax is the mean itself, so the tally's loss
            // is the ensemble's cross-entropy.
            let log_mean: Vec<f32> = host(mean)
                .into_iter()
                .map(|p| p.max(f32::MIN_POSITIVE).ln())
                .collect();
            ensemble.add(&log_mean, &labels);
            task.advance(labels.len() as u64, &String::new);
        }
        Ok(EnsembleEvaluation {
            ensemble: ensemble.finish(),
            members: members.iter().map(Tally::finish).collect(),
        })
    }
}
