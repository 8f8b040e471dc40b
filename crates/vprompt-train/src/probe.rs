//! The linear-probe baseline (paper section 4.2): a linear classifier on the frozen backbone's
//! penultimate features (its outputs where it exposes no features), trained on cached features
//! with Adam, selected on the validation split like a prompt.

use std::sync::Arc;

use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use vprompt_backbone::Backbone;
use vprompt_data::{BatchLoader, PreparedDataset};

use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Tally};

/// Settings of the linear probe.
#[derive(Config, Debug)]
pub struct LinearProbeConfig {
    /// Epochs over the cached training features.
    #[config(default = 100)]
    pub epochs: usize,
    /// Adam learning rate (0.001 underfits the tiny fixture's features in 30 epochs; 0.01 does not).
    #[config(default = 1e-2)]
    pub learning_rate: f64,
    /// Features per batch.
    #[config(default = 256)]
    pub batch_size: usize,
    /// Seed of the initial weights and the batch order.
    #[config(default = 0)]
    pub seed: u64,
}

/// A trained linear probe.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    linear: Linear,
    /// Validation top-1 of the selected epoch, and the epoch (1-based).
    pub best: (usize, f64),
}

/// Features of every image of `data`, unprompted: `(features [n * F] row-major, F, labels)`.
fn features<B: Backbone>(
    backbone: &B,
    data: &Arc<PreparedDataset>,
    device: &Device,
) -> Result<(Vec<f32>, usize, Vec<usize>)> {
    let loader = BatchLoader::new(data.clone(), 64)?;
    let mut out = Vec::new();
    for batch in loader.epoch(0, 0, device) {
        let (f, _) = backbone.forward_features(backbone.normalize(batch.images))?;
        out.extend(f.into_data().try_into_vec_as::<f32>().expect("float features"));
    }
    Ok((out, backbone.feature_dim(), data.labels.clone()))
}

fn evaluate_linear(
    linear: &Linear,
    feats: &[f32],
    dim: usize,
    labels: &[usize],
    classes: usize,
    device: &Device,
) -> Evaluation {
    let mut tally = Tally::new(classes);
    for (rows, ls) in feats.chunks(1024 * dim).zip(labels.chunks(1024)) {
        let x = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [ls.len(), dim]), device);
        let logits = linear
            .forward(x)
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("float logits");
        tally.add(&logits, ls);
    }
    tally.finish()
}

impl LinearProbeConfig {
    /// Caches the features of `train` and `valid`, trains the probe and keeps the epoch with the
    /// best validation top-1.
    pub fn fit<B: Backbone>(
        &self,
        backbone: &B,
        train: &Arc<PreparedDataset>,
        valid: &Arc<PreparedDataset>,
        device: &Device,
    ) -> Result<LinearProbe> {
        if self.epochs == 0
            || self.batch_size == 0
            || !(self.learning_rate.is_finite() && self.learning_rate > 0.0)
        {
            return Err(TrainError::InvalidConfig(format!(
                "invalid linear-probe settings: {self:?}"
            )));
        }
        let classes = train.classes.len();
        let (train_x, dim, train_y) = features(backbone, train, device)?;
        let (valid_x, _, valid_y) = features(backbone, valid, device)?;
        let ad = device.clone().autodiff();
        ad.seed(self.seed);
        let mut linear = LinearConfig::new(dim, classes).init(&ad);
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        let ce = CrossEntropyLossConfig::new().init(&ad);
        let mut best: Option<(usize, f64, Linear)> = None;
        let n = train_y.len();
        for epoch in 0..self.epochs {
            let order = BatchLoader::new(train.clone(), self.batch_size)?
                .shuffled(self.seed)
                .order(epoch as u64);
            for chunk in order.chunks(self.batch_size) {
                let rows: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| train_x[i * dim..(i + 1) * dim].iter().copied())
                    .collect();
                let labels: Vec<i64> = chunk.iter().map(|&i| train_y[i] as i64).collect();
                let x = Tensor::<2>::from_data(TensorData::new(rows, [chunk.len(), dim]), &ad);
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [chunk.len()]), &ad);
                let loss = ce.forward(linear.forward(x), y);
                let grads = GradientsParams::from_grads(loss.backward(), &linear);
                linear = optim.step(self.learning_rate, linear, grads);
            }
            let v = evaluate_linear(&linear.valid(), &valid_x, dim, &valid_y, classes, device);
            if best.as_ref().is_none_or(|(_, b, _)| v.top1 > *b) {
                best = Some((epoch + 1, v.top1, linear.valid()));
            }
        }
        debug_assert!(n > 0);
        let (epoch, top1, linear) = best.expect("at least one epoch");
        Ok(LinearProbe {
            linear,
            best: (epoch, top1),
        })
    }
}

impl LinearProbe {
    /// Accuracy on `data` (the test split, once, at the end).
    pub fn evaluate<B: Backbone>(
        &self,
        backbone: &B,
        data: &Arc<PreparedDataset>,
        device: &Device,
    ) -> Result<Evaluation> {
        let (x, dim, y) = features(backbone, data, device)?;
        Ok(evaluate_linear(
            &self.linear,
            &x,
            dim,
            &y,
            data.classes.len(),
            device,
        ))
    }
}
