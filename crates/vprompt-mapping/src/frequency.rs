//! The statistics data-driven label mappings are fitted on: how often each source output wins (or,
//! for BLM+, how much top-k probability it gets) for the images of each target class, with the
//! current prompt. Accumulated batch by batch, so no pass keeps all outputs in memory.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::error::{MappingError, Result};

/// What a batch contributes to the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// One count for the argmax source output (FLM, ILM, BLM).
    Argmax,
    /// The softmax probabilities of the `k` largest source outputs (BLM+).
    TopKProbabilities(usize),
}

/// `F[s, t]`: evidence that source output `s` goes with target class `t`, `[S, C]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequencyMatrix {
    sources: usize,
    classes: usize,
    counts: Vec<f64>,
    per_class: Vec<usize>,
}

impl FrequencyMatrix {
    /// An empty matrix for `sources` outputs and `classes` target classes.
    pub fn new(sources: usize, classes: usize) -> Self {
        Self {
            sources,
            classes,
            counts: vec![0.0; sources * classes],
            per_class: vec![0; classes],
        }
    }

    /// Builds a matrix from given values `[S, C]` (row-major), e.g. a reference.
    pub fn from_counts(sources: usize, classes: usize, counts: Vec<f64>) -> Result<Self> {
        if counts.len() != sources * classes {
            return Err(MappingError::Shape {
                what: "frequency matrix",
                expected: format!("{sources} x {classes} = {} values", sources * classes),
                actual: format!("{} values", counts.len()),
            });
        }
        let per_class = (0..classes)
            .map(|t| usize::from((0..sources).any(|s| counts[s * classes + t] > 0.0)))
            .collect();
        Ok(Self {
            sources,
            classes,
            counts,
            per_class,
        })
    }

    /// Number of source outputs `S`.
    pub fn sources(&self) -> usize {
        self.sources
    }

    /// Number of target classes `C`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The values, `[S, C]` row-major.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Adds a batch of source outputs and their labels.
    ///
    /// # Shapes
    /// - outputs: `[batch, S]` (logits)
    pub fn add(&mut self, outputs: Tensor<2>, labels: &[usize], evidence: Evidence) -> Result<()> {
        let [batch, columns] = outputs.dims();
        if columns != self.sources || batch != labels.len() {
            return Err(MappingError::Shape {
                what: "source outputs and labels",
                expected: format!(
                    "[{}, {}] with {} labels",
                    labels.len(),
                    self.sources,
                    labels.len()
                ),
                actual: format!("[{batch}, {columns}]"),
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= self.classes) {
            return Err(MappingError::LabelOutOfRange {
                label,
                classes: self.classes,
            });
        }
        match evidence {
            Evidence::Argmax => {
                let winners = outputs.argmax(1).into_data().convert::<i64>();
                let winners = winners.try_into_vec::<i64>().expect("int data");
                for (&s, &t) in winners.iter().zip(labels) {
                    self.counts[s as usize * self.classes + t] += 1.0;
                    self.per_class[t] += 1;
                }
            }
            Evidence::TopKProbabilities(k) => {
                if k == 0 || k > self.sources {
                    return Err(MappingError::InvalidConfig(format!(
                        "top-k needs 1 <= k <= {} source outputs, got {k}",
                        self.sources
                    )));
                }
                let probabilities = softmax(outputs, 1);
                let (values, indices) = probabilities.topk_with_indices(k, 1);
                let values = values.into_data().try_into_vec_as::<f64>().expect("float data");
                let indices = indices
                    .into_data()
                    .convert::<i64>()
                    .try_into_vec::<i64>()
                    .expect("int data");
                for (row, &t) in labels.iter().enumerate() {
                    for j in 0..k {
                        let s = indices[row * k + j] as usize;
                        self.counts[s * self.classes + t] += values[row * k + j];
                    }
                    self.per_class[t] += 1;
                }
            }
        }
        Ok(())
    }

    fn require_every_class(&self, mapping: &'static str) -> Result<()> {
        match self.per_class.iter().position(|&n| n == 0) {
            Some(class) => Err(MappingError::MissingClass { mapping, class }),
            None => Ok(()),
        }
    }

    /// Greedy one-to-one assignment (FLM, ILM-VP's `flm_calculation`): `C` times, take the largest
    /// entry `(s, t)` (ties: the first in row-major order, as `torch.argmax`), map `t <- s`, and
    /// remove row `s` and column `t`. Returns the source output of each target class.
    pub fn greedy_one_to_one(&self) -> Result<Vec<usize>> {
        self.require_every_class("frequency")?;
        if self.classes > self.sources {
            return Err(MappingError::TooManyClasses {
                mapping: "frequency",
                classes: self.classes,
                sources: self.sources,
            });
        }
        let c = self.classes;
        let mut f = self.counts.clone();
        let mut assignment = vec![usize::MAX; c];
        for _ in 0..c {
            let (best, _) =
                f.iter().enumerate().fold(
                    (0, f64::NEG_INFINITY),
                    |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                );
            let (s, t) = (best / c, best % c);
            assignment[t] = s;
            f[s * c..(s + 1) * c].fill(-1.0);
            for row in 0..self.sources {
                f[row * c + t] = -1.0;
            }
        }
        Ok(assignment)
    }

    /// Bayesian-guided label mapping (BLM, BLM+): `P[s, t] = F[s, t] / (sum_t' F[s, t'] + lambda)`,
    /// then each column normalised to sum 1: `omega[s, t] = P[s, t] / sum_s' P[s', t]`. Target logits
    /// are `source_logits @ omega`. A source row with no evidence and `lambda = 0` gives 0, not NaN.
    pub fn bayesian_weights(&self, lambda: f64, mapping: &'static str) -> Result<Vec<f64>> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(MappingError::InvalidConfig(format!(
                "the Laplace smoothing lambda must be finite and >= 0, got {lambda}"
            )));
        }
        self.require_every_class(mapping)?;
        let c = self.classes;
        let mut p = vec![0.0; self.counts.len()];
        for s in 0..self.sources {
            let row = &self.counts[s * c..(s + 1) * c];
            let denominator = row.iter().sum::<f64>() + lambda;
            if denominator > 0.0 {
                for t in 0..c {
                    p[s * c + t] = row[t] / denominator;
                }
            }
        }
        for t in 0..c {
            let column: f64 = (0..self.sources).map(|s| p[s * c + t]).sum();
            for s in 0..self.sources {
                p[s * c + t] /= column;
            }
        }
        Ok(p)
    }
}
