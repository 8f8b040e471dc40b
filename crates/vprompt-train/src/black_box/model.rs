//! Models that can only be queried: images in, class scores out (paper section 2.3: "users can
//! feed domain-adapted images to online APIs that can only be manipulated via their inputs").

use std::error::Error;
use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use vprompt_backbone::Backbone;
use vprompt_core::{Quiet, Task};
use vprompt_data::{BatchLoader, PreparedDataset};
use vprompt_mapping::{Mapping, OutputMapping};
use vprompt_prompt::{Phase, Prompt, VisualPrompt};

use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Tally};

/// The error a [`BlackBoxModel`] returns: anything (a network error, a rate limit, a bad reply).
pub type QueryError = Box<dyn Error + Send + Sync + 'static>;

/// What a [`BlackBoxModel`] returns per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scores {
    /// Unnormalised logits; the loss is their log-softmax cross-entropy.
    Logits,
    /// Probabilities summing to 1 (what most prediction APIs return); the loss is `-ln p[label]`
    /// (with `p` floored at `1e-12`).
    Probabilities,
}

/// A classifier that can only be queried: `[0, 1]` images in, one row of class scores per image
/// out; no gradients, no weights, no features. Black-box prompt training
/// ([`BlackBoxTrainer`](crate::BlackBoxTrainer)) sees nothing else.
///
/// [`LocalModel`] implements it for any backbone and mapping. To train a prompt for a remote or
/// non-Burn model, implement it yourself: turn the images into bytes
/// (`images.into_data()`), send them, and return the scores row-major.
///
/// ```
/// use burn::prelude::*;
/// use vprompt_train::{BlackBoxModel, QueryError};
///
/// /// Calls out to some service (here: a fixed answer).
/// struct Remote;
///
/// impl BlackBoxModel for Remote {
///     fn input_size(&self) -> [usize; 2] {
///         [224, 224]
///     }
///     fn num_classes(&self) -> usize {
///         2
///     }
///     fn query(&mut self, images: Tensor<4>) -> Result<Vec<f32>, QueryError> {
///         let batch = images.dims()[0];
///         let _pixels: Vec<f32> = images.into_data().try_to_vec().map_err(|e| format!("{e:?}"))?;
///         Ok([0.9, 0.1].repeat(batch))
///     }
/// }
/// ```
pub trait BlackBoxModel {
    /// The image size `[height, width]` the model takes.
    fn input_size(&self) -> [usize; 2];

    /// Number of classes (scores per image).
    fn num_classes(&self) -> usize;

    /// Whether [`query`](BlackBoxModel::query) returns logits or probabilities.
    fn scores(&self) -> Scores {
        Scores::Logits
    }

    /// Scores of each image: `batch * num_classes` values, row-major. Each image counts as one
    /// query.
    ///
    /// # Shapes
    /// - images: `[batch, 3, H, W]` in `[0, 1]`, `[H, W]` = [`input_size`](BlackBoxModel::input_size)
    fn query(&mut self, images: Tensor<4>) -> std::result::Result<Vec<f32>, QueryError>;
}

/// A frozen backbone and a mapping used as a black box: normalise, run, map to the downstream
/// classes. Used to compare black-box with white-box training on the same model, and to test.
#[derive(Debug, Clone)]
pub struct LocalModel<B: Backbone> {
    /// The frozen model.
    pub backbone: B,
    /// Source outputs to target classes.
    pub mapping: Mapping,
}

impl<B: Backbone> LocalModel<B> {
    /// A local black box, checking that the mapping reads the backbone's outputs.
    pub fn new(backbone: B, mapping: Mapping) -> Result<Self> {
        crate::classifier::check_mapping(&backbone, &mapping)?;
        Ok(Self { backbone, mapping })
    }
}

impl<B: Backbone> BlackBoxModel for LocalModel<B> {
    fn input_size(&self) -> [usize; 2] {
        self.backbone.input_size()
    }

    fn num_classes(&self) -> usize {
        self.mapping.num_classes()
    }

    fn query(&mut self, images: Tensor<4>) -> std::result::Result<Vec<f32>, QueryError> {
        let outputs = self.backbone.forward_features(self.backbone.normalize(images))?;
        let logits = crate::classifier::map_outputs(&self.mapping, outputs)?;
        Ok(logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?)
    }
}

/// Queries `model` and checks the reply's length; counts the images in `queries`.
pub(crate) fn query_checked<M: BlackBoxModel + ?Sized>(
    model: &mut M,
    images: Tensor<4>,
    queries: &mut u64,
) -> Result<Vec<f32>> {
    let batch = images.dims()[0];
    let scores = model.query(images).map_err(TrainError::Query)?;
    *queries += batch as u64;
    let expected = batch * model.num_classes();
    if scores.len() != expected {
        return Err(TrainError::Query(
            format!(
                "the model returned {} scores for {batch} images of {} classes (expected {expected})",
                scores.len(),
                model.num_classes()
            )
            .into(),
        ));
    }
    Ok(scores)
}

/// Cross-entropy of each row of `scores` (`[rows * classes]`) against `labels`.
pub(crate) fn cross_entropy(scores: &[f32], labels: &[usize], classes: usize, kind: Scores) -> Vec<f64> {
    scores
        .chunks(classes)
        .zip(labels)
        .map(|(row, &label)| match kind {
            Scores::Logits => {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                sum.ln() + max - row[label] as f64
            }
            Scores::Probabilities => -(row[label] as f64).max(1e-12).ln(),
        })
        .collect()
}

/// Checks that a prompt can be trained or evaluated through `model`: pixel space (a black box
/// takes images, not normalised tensors), 3 channels, the model's input size.
pub(crate) fn check_prompt<M: BlackBoxModel + ?Sized>(prompt: &Prompt, model: &M) -> Result<()> {
    if !matches!(prompt.space(), vprompt_prompt::PromptSpace::Pixel { .. }) {
        return Err(TrainError::Mismatch(
            "a black-box prompt must live in pixel space (`space: Pixel { clamp: true }`): the model \
             takes images and normalises them itself"
                .into(),
        ));
    }
    if prompt.image_size() != model.input_size() || prompt.channels() != 3 {
        return Err(TrainError::Mismatch(format!(
            "the prompt is made for {}-channel {:?} images, the model takes 3-channel {:?}",
            prompt.channels(),
            prompt.image_size(),
            model.input_size()
        )));
    }
    Ok(())
}

/// Accuracy of `model` on every image of `loader`, with `prompt` (in `Phase::Eval`) or, with
/// `prompted = false`, through the same pipeline without it. Returns the evaluation and the
/// queries it cost (one per image).
pub fn evaluate_black_box<M: BlackBoxModel + ?Sized>(
    model: &mut M,
    prompt: &Prompt,
    loader: &BatchLoader,
    device: &Device,
    prompted: bool,
) -> Result<(Evaluation, u64)> {
    evaluate_black_box_with(model, prompt, loader, device, prompted, &mut Quiet)
}

/// [`evaluate_black_box`], advancing `task` by each batch's images.
pub(crate) fn evaluate_black_box_with<M: BlackBoxModel + ?Sized>(
    model: &mut M,
    prompt: &Prompt,
    loader: &BatchLoader,
    device: &Device,
    prompted: bool,
    task: &mut dyn Task,
) -> Result<(Evaluation, u64)> {
    check_prompt(prompt, model)?;
    let classes = model.num_classes();
    if loader.data().classes.len() != classes {
        return Err(TrainError::Mismatch(format!(
            "the data has {} classes, the model {classes}",
            loader.data().classes.len()
        )));
    }
    let mut tally = Tally::new(classes);
    let mut queries = 0;
    for (k, batch) in loader.epoch(0, 0, device).enumerate() {
        let images = if prompted {
            prompt.apply(batch.images, Phase::Eval { batch: k as u64 })?
        } else {
            prompt.unprompted(batch.images)?
        };
        let scores = query_checked(model, images, &mut queries)?;
        let labels: Vec<usize> = batch.indices.iter().map(|&i| loader.data().labels[i]).collect();
        // The tally ranks scores and reads the loss as logits; for probabilities pass their logs,
        // which rank the same and give -ln p as the loss.
        let scores = match model.scores() {
            Scores::Logits => scores,
            Scores::Probabilities => scores.iter().map(|&p| p.max(1e-12).ln()).collect(),
        };
        tally.add(&scores, &labels);
        task.advance(labels.len() as u64, &String::new);
    }
    Ok((tally.finish(), queries))
}

/// Prompted and unprompted accuracy of a black box, and what the evaluation cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackBoxReport {
    /// Class names.
    pub classes: Vec<String>,
    /// With the prompt.
    pub prompted: Evaluation,
    /// Without it.
    pub unprompted: Evaluation,
    /// Queries the training run spent (training steps only).
    pub training_queries: u64,
    /// Queries the validation evaluations during training spent.
    pub validation_queries: u64,
    /// Queries this evaluation spent (prompted and unprompted).
    pub evaluation_queries: u64,
}

/// Evaluates `prompt` on `data` through `model`, prompted and unprompted.
pub(crate) fn report<M: BlackBoxModel + ?Sized>(
    model: &mut M,
    prompt: &Prompt,
    data: Arc<PreparedDataset>,
    batch_size: usize,
    device: &Device,
) -> Result<(Evaluation, Evaluation, u64)> {
    let loader = BatchLoader::new(data, batch_size)?;
    let (prompted, a) = evaluate_black_box(model, prompt, &loader, device, true)?;
    let (unprompted, b) = evaluate_black_box(model, prompt, &loader, device, false)?;
    Ok((prompted, unprompted, a + b))
}

/// A tensor's values on the host.
pub(crate) fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("float tensors")
}
