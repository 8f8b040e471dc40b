//! Mapping a frozen model's outputs to the classes of a downstream task (paper sections 3.5, 3.6).
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn.
//!
//! Every mapping is a [`Mapping`]: `logits = scale * f(source) @ W`, one matrix product per batch.
//!
//! - **Label mappings** for classifiers ([`LabelMappingConfig`]): the paper's first-N, random (RLM),
//!   manual (several sources per class averaged), frequency (FLM), iterative (ILM), Bayesian (BLM)
//!   and BLM+. Data-driven ones are fitted on a [`FrequencyMatrix`] accumulated over the training
//!   set with the current prompt.
//! - **The CLIP text head** ([`clip_head`]): class names in templates, tokenised with CLIP's BPE,
//!   encoded once, averaged over templates; logits `100 * cos`.
//! - **Learned mappings** ([`Mapping::learned`]; `FullyMap` and `LinearProbe` in
//!   [`LabelMappingConfig`]): `x @ W + b` over the source outputs (AutoVP's FullyMap) or the
//!   penultimate features (a linear probe), trained together with the prompt.
//!
//! ```
//! use burn::prelude::*;
//! use vprompt_mapping::{LabelMappingConfig, OutputMapping};
//!
//! let device = Device::flex();
//! let mapping = LabelMappingConfig::FirstN.init(1000, 10, &device)?; // ImageNet logits -> 10 classes
//! let logits = mapping.forward(Tensor::<2>::zeros([4, 1000], &device))?;
//! assert_eq!(logits.dims(), [4, 10]);
//! # Ok::<(), vprompt_mapping::MappingError>(())
//! ```

mod clip;
mod error;
mod file;
mod frequency;
mod label;
mod mapping;

pub use clip::{
    CAMELYON17_TEMPLATE, CLEVR_TEMPLATE, CONTEXT_LENGTH, IMAGENET_TEMPLATES, LOGIT_SCALE, PAPER_TEMPLATE,
    clip_head, fill, refine_class_name, tokenize,
};
pub use error::{MappingError, Result};
pub use file::METADATA_KEY;
pub use frequency::{Evidence, FrequencyMatrix};
pub use instant_clip_tokenizer::Tokenizer;
pub use label::LabelMappingConfig;
pub use mapping::{Mapping, MappingInput, MappingKind, OutputMapping, l2_normalize};
