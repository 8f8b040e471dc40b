use burn::module::{Module, Param};
use burn::prelude::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::error::{MappingError, Result};

/// Source outputs to downstream logits. (The method is `forward`, not `map`: `Module::map` exists.)
pub trait OutputMapping: Module {
    /// Number of values per image the mapping reads: the source outputs `S`, or the penultimate
    /// features for a mapping that reads those ([`MappingInput::Features`]).
    fn source_dim(&self) -> usize;

    /// Number of target classes `C`.
    fn num_classes(&self) -> usize;

    /// Maps a batch of source outputs to target logits.
    ///
    /// # Shapes
    /// - source: `[batch, S]`
    /// - output: `[batch, C]`
    ///
    /// # Errors
    /// [`MappingError::Shape`] if `source` does not have `S` columns.
    fn forward(&self, source: Tensor<2>) -> Result<Tensor<2>>;
}

/// How a [`Mapping`] was made: recorded with its weights so a saved mapping says what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MappingKind {
    /// A label mapping: which source outputs feed each target class (their logits averaged), or,
    /// for the Bayesian mappings, a dense matrix.
    Label {
        /// The method (`first-n`, `random`, `manual`, `frequency`, `iterative`, `bayesian`,
        /// `bayesian-plus`).
        method: String,
        /// For index mappings, the source outputs of each target class.
        sources: Option<Vec<Vec<usize>>>,
    },
    /// A CLIP text-prompt head: class names and the templates whose text embeddings were averaged.
    ClipText {
        /// Class names, after refinement.
        classes: Vec<String>,
        /// Templates with `{}` for the class name.
        templates: Vec<String>,
    },
    /// A linear layer (weights and bias) learned together with the prompt: AutoVP's FullyMap over
    /// the source outputs, or a linear probe over the penultimate features (the paper's "prompt
    /// with a linear probe").
    Learned {
        /// What it reads.
        input: MappingInput,
    },
}

/// What a mapping reads from the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MappingInput {
    /// The model's outputs `[batch, S]` (its logits, or an embedding): every mapping but one.
    SourceOutputs,
    /// The penultimate features `[batch, F]`, the linear probe's input.
    Features,
}

/// A fitted mapping from `S` source outputs to `C` target classes, one matrix product:
/// `logits = scale * f(source) @ W` with `W: [S, C]`, where `f` is the identity for label mappings
/// and row-wise L2 normalisation for the CLIP head (`W` = normalised text embeddings, transposed,
/// `scale` = 100, so logits are `100 * cos(image, text)`).
///
/// An index mapping (first-N, random, manual, frequency, iterative) has `W[s, t] = 1 / |sources(t)|`
/// for the sources of `t` and 0 elsewhere, which is `source[:, sources(t)].mean()`: source outputs
/// assigned to no class do not enter the loss, as in the paper. The Bayesian mappings' `W` is their
/// dense probability matrix `omega`. For these `W` is a constant (keep the mapping on a plain
/// device and nothing in it takes gradients).
///
/// A learned mapping ([`MappingKind::Learned`], [`Mapping::learned`]) is `x @ W + b`, with `x`
/// the source outputs (`W: [S, C]`) or the penultimate features (`W: [F, C]`): its parameters
/// train with the prompt on the autodiff device.
#[derive(Module, Debug)]
pub struct Mapping {
    /// `[S, C]` (`[F, C]` when it reads features).
    weights: Param<Tensor<2>>,
    /// `[C]`: learned mappings only.
    bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    normalize_input: bool,
    #[module(skip)]
    scale: f32,
    #[module(skip)]
    kind: MappingKind,
}

impl Mapping {
    /// Builds a mapping from a host matrix `[S, C]` (row-major).
    pub(crate) fn from_matrix(
        matrix: Vec<f32>,
        [sources, classes]: [usize; 2],
        normalize_input: bool,
        scale: f32,
        kind: MappingKind,
        device: &Device,
    ) -> Self {
        debug_assert_eq!(matrix.len(), sources * classes);
        Self {
            weights: Param::from_tensor(Tensor::from_data(
                TensorData::new(matrix, [sources, classes]),
                device,
            )),
            bias: None,
            normalize_input,
            scale,
            kind,
        }
    }

    /// An index mapping: target class `t` averages the source outputs `sources[t]`.
    pub(crate) fn from_sources(
        sources: Vec<Vec<usize>>,
        source_dim: usize,
        method: &str,
        device: &Device,
    ) -> Result<Self> {
        let classes = sources.len();
        let mut owner: Vec<Option<usize>> = vec![None; source_dim];
        let mut matrix = vec![0.0f32; source_dim * classes];
        for (target, list) in sources.iter().enumerate() {
            if list.is_empty() {
                return Err(MappingError::EmptyTarget(target));
            }
            for &s in list {
                if s >= source_dim {
                    return Err(MappingError::SourceOutOfRange {
                        target,
                        source_index: s,
                        sources: source_dim,
                    });
                }
                if let Some(first) = owner[s] {
                    return Err(MappingError::DuplicateSource {
                        source_index: s,
                        first,
                        second: target,
                    });
                }
                owner[s] = Some(target);
                matrix[s * classes + target] = 1.0 / list.len() as f32;
            }
        }
        let kind = MappingKind::Label {
            method: method.to_string(),
            sources: Some(sources),
        };
        Ok(Self::from_matrix(
            matrix,
            [source_dim, classes],
            false,
            1.0,
            kind,
            device,
        ))
    }

    /// A learned linear mapping from `inputs` values (the source outputs or the features, as
    /// `input` says) to `classes`, initialised as PyTorch's `nn.Linear` is (weights and bias
    /// uniform in `±1/sqrt(inputs)`), from `seed`.
    ///
    /// # Errors
    /// [`MappingError::InvalidConfig`] for zero inputs or classes.
    pub fn learned(
        input: MappingInput,
        inputs: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if inputs == 0 || classes == 0 {
            return Err(MappingError::InvalidConfig(format!(
                "a learned mapping needs inputs and classes, got {inputs} x {classes}"
            )));
        }
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let weights = uniform(inputs * classes);
        let bias = uniform(classes);
        let mut mapping = Self::from_matrix(
            weights,
            [inputs, classes],
            false,
            1.0,
            MappingKind::Learned { input },
            device,
        );
        mapping.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [classes]),
            device,
        )));
        Ok(mapping)
    }

    /// Whether the mapping has parameters that train with the prompt.
    pub fn is_learned(&self) -> bool {
        matches!(self.kind, MappingKind::Learned { .. })
    }

    /// What the mapping reads: the source outputs, or (a linear probe) the penultimate features.
    pub fn input(&self) -> MappingInput {
        match self.kind {
            MappingKind::Learned { input } => input,
            _ => MappingInput::SourceOutputs,
        }
    }

    /// The learned bias `[C]` on the host, for learned mappings.
    pub fn bias(&self) -> Option<Vec<f32>> {
        self.bias.as_ref().map(|b| {
            b.val()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("float tensors convert to f32")
        })
    }

    /// How this mapping was made.
    pub fn kind(&self) -> &MappingKind {
        &self.kind
    }

    /// For index mappings, the source outputs of each target class.
    pub fn sources(&self) -> Option<&[Vec<usize>]> {
        match &self.kind {
            MappingKind::Label { sources, .. } => sources.as_deref(),
            MappingKind::ClipText { .. } | MappingKind::Learned { .. } => None,
        }
    }

    /// The matrix `W`, `[S, C]`, on the host.
    pub fn matrix(&self) -> Vec<f32> {
        self.weights
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("float tensors convert to f32")
    }

    /// Whether source rows are L2-normalised first (the CLIP head).
    pub fn normalizes_input(&self) -> bool {
        self.normalize_input
    }

    /// The logit scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The same mapping with logit scale `scale`: for a CLIP head, the checkpoint's own
    /// (`TextEncoder::logit_scale`) instead of OpenAI CLIP's 100.
    ///
    /// # Errors
    /// [`MappingError::InvalidConfig`] unless `scale` is finite and positive.
    pub fn with_scale(mut self, scale: f32) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(MappingError::InvalidConfig(format!(
                "a logit scale must be finite and positive, got {scale}"
            )));
        }
        self.scale = scale;
        Ok(self)
    }
}

impl OutputMapping for Mapping {
    fn source_dim(&self) -> usize {
        self.weights.dims()[0]
    }

    fn num_classes(&self) -> usize {
        self.weights.dims()[1]
    }

    fn forward(&self, source: Tensor<2>) -> Result<Tensor<2>> {
        let [batch, columns] = source.dims();
        if columns != self.source_dim() {
            return Err(MappingError::Shape {
                what: "source outputs",
                expected: format!("[batch, {}]", self.source_dim()),
                actual: format!("[{batch}, {columns}]"),
            });
        }
        let source = if self.normalize_input {
            l2_normalize(source)
        } else {
            source
        };
        let logits = source.matmul(self.weights.val());
        let logits = match &self.bias {
            Some(bias) => logits + bias.val().unsqueeze::<2>(),
            None => logits,
        };
        Ok(if self.scale == 1.0 {
            logits
        } else {
            logits.mul_scalar(self.scale)
        })
    }
}

/// Divides each row by its L2 norm.
///
/// # Shapes
/// - x: `[n, d]`
/// - output: `[n, d]`
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / norm
}
