use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::error::{MappingError, Result};
use crate::frequency::{Evidence, FrequencyMatrix};
use crate::mapping::{Mapping, MappingInput, MappingKind};

/// How target classes are mapped to a classifier's outputs (definitions:
/// `research/reference-algorithm.md` section 3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum LabelMappingConfig {
    /// The paper's mapping: target class `i` <- source output `i`; the other outputs do not enter
    /// the loss.
    FirstN,
    /// A seeded random one-to-one mapping (RLM).
    Random {
        /// Seed of the permutation.
        seed: u64,
    },
    /// Explicit source outputs per target class; several are averaged.
    Manual {
        /// `sources[t]`: the source outputs of target class `t`.
        sources: Vec<Vec<usize>>,
    },
    /// Greedy one-to-one assignment on the argmax frequency matrix, fitted once before training
    /// (FLM).
    Frequency,
    /// FLM refitted every `every` epochs during training (ILM; ILM-VP refits every epoch).
    Iterative {
        /// Refit interval in epochs (at least 1).
        every: usize,
    },
    /// Bayesian-guided mapping on argmax counts, refitted every `every` epochs (BLM).
    Bayesian {
        /// Laplace smoothing `lambda` (the reference uses 1).
        lambda: f64,
        /// Refit interval in epochs.
        every: usize,
    },
    /// BLM on summed top-k softmax probabilities (BLM+).
    BayesianPlus {
        /// Laplace smoothing `lambda` (the reference config uses 1).
        lambda: f64,
        /// Probabilities kept per image; `None` is the reference's `int(0.15 * C)` (at least 1).
        top_k: Option<usize>,
        /// Refit interval in epochs.
        every: usize,
    },
    /// AutoVP's FullyMap: a linear layer (weights and bias) over all `S` source outputs, learned
    /// together with the prompt.
    FullyMap,
    /// A linear probe on the penultimate features, learned together with the prompt (the paper's
    /// future work: a prompt used with a linear probe). Its input size is the backbone's feature
    /// size, not `S`.
    LinearProbe,
}

impl LabelMappingConfig {
    /// ILM as in ILM-VP: refit every epoch.
    pub const ILM: Self = Self::Iterative { every: 1 };
    /// BLM with the reference's settings.
    pub const BLM: Self = Self::Bayesian {
        lambda: 1.0,
        every: 1,
    };
    /// BLM+ with the reference's settings.
    pub const BLM_PLUS: Self = Self::BayesianPlus {
        lambda: 1.0,
        top_k: None,
        every: 1,
    };

    /// The method's short name.
    pub fn method(&self) -> &'static str {
        match self {
            Self::FirstN => "first-n",
            Self::Random { .. } => "random",
            Self::Manual { .. } => "manual",
            Self::Frequency => "frequency",
            Self::Iterative { .. } => "iterative",
            Self::Bayesian { .. } => "bayesian",
            Self::BayesianPlus { .. } => "bayesian-plus",
            Self::FullyMap => "fully-map",
            Self::LinearProbe => "linear-probe",
        }
    }

    /// Whether the mapping's parameters are learned with the prompt (FullyMap, linear probe).
    pub fn is_learned(&self) -> bool {
        matches!(self, Self::FullyMap | Self::LinearProbe)
    }

    /// What the mapping reads: the penultimate features for the linear probe, the source outputs
    /// for every other mapping.
    pub fn input(&self) -> MappingInput {
        match self {
            Self::LinearProbe => MappingInput::Features,
            _ => MappingInput::SourceOutputs,
        }
    }

    /// Whether the mapping is fitted on data ([`fit`](Self::fit)) rather than built directly
    /// ([`init`](Self::init)).
    pub fn needs_fit(&self) -> bool {
        matches!(
            self,
            Self::Frequency | Self::Iterative { .. } | Self::Bayesian { .. } | Self::BayesianPlus { .. }
        )
    }

    /// For mappings refitted during training: every how many epochs.
    pub fn refit_every(&self) -> Option<usize> {
        match *self {
            Self::Iterative { every } | Self::Bayesian { every, .. } | Self::BayesianPlus { every, .. } => {
                Some(every)
            }
            _ => None,
        }
    }

    /// What a fitting pass must accumulate, for `classes` target classes.
    pub fn evidence(&self, classes: usize) -> Evidence {
        match *self {
            Self::BayesianPlus { top_k, .. } => {
                Evidence::TopKProbabilities(top_k.unwrap_or(((0.15 * classes as f64) as usize).max(1)))
            }
            _ => Evidence::Argmax,
        }
    }

    /// Checks the settings for `sources` inputs (the source outputs, or the features for the
    /// linear probe) and `classes` target classes.
    pub fn validate(&self, sources: usize, classes: usize) -> Result<()> {
        if classes == 0 {
            return Err(MappingError::InvalidConfig(
                "a mapping needs at least one target class".into(),
            ));
        }
        if self.is_learned() {
            return if sources == 0 {
                Err(MappingError::InvalidConfig(
                    "a learned mapping needs at least one input".into(),
                ))
            } else {
                Ok(())
            };
        }
        if classes > sources {
            return Err(MappingError::TooManyClasses {
                mapping: self.method(),
                classes,
                sources,
            });
        }
        match self {
            Self::Manual { sources: lists } if lists.len() != classes => {
                Err(MappingError::InvalidConfig(format!(
                    "the manual mapping lists {} target classes, the task has {classes}",
                    lists.len()
                )))
            }
            Self::Iterative { every: 0 }
            | Self::Bayesian { every: 0, .. }
            | Self::BayesianPlus { every: 0, .. } => Err(MappingError::InvalidConfig(
                "the refit interval must be at least 1 epoch".into(),
            )),
            Self::BayesianPlus { top_k: Some(k), .. } if *k == 0 || *k > sources => Err(
                MappingError::InvalidConfig(format!("top-k must be in 1..={sources}, got {k}")),
            ),
            _ => Ok(()),
        }
    }

    /// Builds a mapping that needs no data (first-N, random, manual, and the learned ones at
    /// their initialisation from seed 0) for `sources` inputs and `classes` target classes.
    pub fn init(&self, sources: usize, classes: usize, device: &Device) -> Result<Mapping> {
        self.init_seeded(sources, classes, 0, device)
    }

    /// [`init`](Self::init), with a learned mapping's initial weights drawn from `seed` (the
    /// run's seed, so that seeds of an experiment differ in it too).
    pub fn init_seeded(&self, sources: usize, classes: usize, seed: u64, device: &Device) -> Result<Mapping> {
        self.validate(sources, classes)?;
        if self.is_learned() {
            return Mapping::learned(self.input(), sources, classes, seed, device);
        }
        let lists: Vec<Vec<usize>> = match self {
            Self::FirstN => (0..classes).map(|t| vec![t]).collect(),
            Self::Random { seed } => {
                let mut order: Vec<usize> = (0..sources).collect();
                order.shuffle(&mut StdRng::seed_from_u64(*seed));
                order[..classes].iter().map(|&s| vec![s]).collect()
            }
            Self::Manual { sources: lists } => lists.clone(),
            _ => {
                return Err(MappingError::InvalidConfig(format!(
                    "the {} mapping is fitted on data: call `fit`",
                    self.method()
                )));
            }
        };
        Mapping::from_sources(lists, sources, self.method(), device)
    }

    /// Fits a data-driven mapping (frequency, iterative, Bayesian) on a frequency matrix; builds
    /// the others directly.
    pub fn fit(&self, frequencies: &FrequencyMatrix, device: &Device) -> Result<Mapping> {
        let (sources, classes) = (frequencies.sources(), frequencies.classes());
        self.validate(sources, classes)?;
        match *self {
            Self::Frequency | Self::Iterative { .. } => {
                let assignment = frequencies.greedy_one_to_one()?;
                Mapping::from_sources(
                    assignment.into_iter().map(|s| vec![s]).collect(),
                    sources,
                    self.method(),
                    device,
                )
            }
            Self::Bayesian { lambda, .. } | Self::BayesianPlus { lambda, .. } => {
                let omega = frequencies.bayesian_weights(lambda, self.method())?;
                let kind = MappingKind::Label {
                    method: self.method().to_string(),
                    sources: None,
                };
                let matrix = omega.into_iter().map(|v| v as f32).collect();
                Ok(Mapping::from_matrix(
                    matrix,
                    [sources, classes],
                    false,
                    1.0,
                    kind,
                    device,
                ))
            }
            _ => self.init(sources, classes, device),
        }
    }
}
