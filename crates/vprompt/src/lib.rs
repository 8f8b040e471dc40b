//! vprompt: visual prompting in pure Rust. Adapt a frozen, pretrained vision model to a new task
//! by learning only a perturbation of its input pixels (Bahng et al., "Visual Prompting:
//! Modifying Pixel Space to Adapt Pre-trained Models").
//!
//! # Feature flags
//! - `flex` (default): Burn's pure-Rust CPU backend, `Device::flex()`.
//! - `wgpu`: any GPU through wgpu (Vulkan, Metal, DirectX, WebGPU), `Device::wgpu(..)`.
//! - `cuda`: NVIDIA GPUs, `Device::cuda(0)`.
//! - `cpu`: CubeCL's CPU backend, `Device::cpu()`.
//!
//! The library never names a backend: every function takes a `&Device`, and a program picks its
//! device once. Pass the plain device (`Device::flex()`): the frozen backbone and the data stay on
//! it, and gradient training puts only the prompt on its autodiff twin (`device.autodiff()`), so
//! the backbone's weights never enter the autodiff tape.
//!
//! This crate is the facade: it re-exports the crates below and adds [`prelude`], [`enum@Error`],
//! [`tune_allocator`] and [`device`] (the device names every program accepts). The `vprompt`
//! command-line tool (arguments, commands, progress bars over [`run`]) is the `vprompt-cli` crate.
//!
//! # Crates
//! - [`prompt`]: the prompt templates (padding, fixed and random patch, full image,
//!   shrink-and-frame), their persistence and PNG export.
//! - [`backbone`]: frozen pretrained models imported from ONNX: EfficientNet-Lite0 with embedded
//!   ImageNet weights, and ResNet-50, ResNeXt-101 32x8d and CLIP ViT-B/32 with your own weights.
//! - [`data`]: readers (IDX, CIFAR, image folders, CSV lists), seeded validation splits and
//!   few-shot samples, preprocessing done once (with a disk cache), and batching.
//! - [`mapping`]: source outputs to downstream classes: label mappings (first-N, random, manual,
//!   FLM, ILM, BLM, BLM+) and the CLIP text-prompt head.
//! - [`train`]: the prompted classifier and one training engine with validation selection and
//!   crash-safe, exactly resumable checkpoints, for gradient training (the paper's and
//!   follow-ups' recipes), black-box training with zeroth-order optimisers (RGF, SPSA-GC) through
//!   any [`BlackBoxModel`] (images in, scores out), and the linear-probe baseline; evaluation.
//! - [`run`]: a run as a library object: a typed [`RunConfig`] (read from TOML), a [`Run`] that
//!   owns its directory (identity checked once, records written atomically) and trains, and
//!   [`Run::load`], which gives a trained run back as a ready classifier; experiments (grids of
//!   runs), black boxes behind a program or HTTP.
//!
//! Most programs only need `use vprompt::prelude::*;`.

/// The Burn version vprompt is built on, for tensor types and operations beyond the prelude.
pub use burn;
pub use vprompt_backbone as backbone;
pub use vprompt_data as data;
pub use vprompt_mapping as mapping;
pub use vprompt_prompt as prompt;
pub use vprompt_run as run;
pub use vprompt_train as train;

pub mod allocator;
pub mod device;

pub use allocator::tune_allocator;
pub use device::{DeviceArgs, DeviceError, DeviceName, device_from_args, parse_device};
pub use vprompt_backbone::{Backbone, ImageBackbone, Normalization, OutputKind, Preset, TextEncoder};
pub use vprompt_data::{Dataset, PreparedDataset, Preprocess};
pub use vprompt_mapping::{LabelMappingConfig, Mapping, OutputMapping};
pub use vprompt_prompt::{
    ConditionalPromptConfig, EvalLocation, FixedPatchPromptConfig, FullImagePromptConfig,
    PaddingPromptConfig, Phase, Prompt, PromptConfig, PromptInit, PromptSpace, RandomPatchPromptConfig,
    ResizeFilter, ShrinkFramePromptConfig, VisualPrompt,
};
pub use vprompt_run::{LoadedRun, Run, RunConfig};
pub use vprompt_train::{
    BlackBoxConfig, BlackBoxModel, BlackBoxReport, BlackBoxTrainer, ConfigError, LinearProbeConfig,
    LocalModel, OptimizerConfig, Progress, PromptedClassifier, QueryError, Recipe, Report, ScheduleConfig,
    Scores, Trainer, TrainingConfig, ZerothOrderConfig,
};

/// Any error from the vprompt crates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A prompt could not be configured, applied, saved or loaded.
    #[error(transparent)]
    Prompt(#[from] vprompt_prompt::PromptError),
    /// A backbone could not be loaded, imported or run.
    #[error(transparent)]
    Backbone(#[from] vprompt_backbone::BackboneError),
    /// A dataset could not be read, split, prepared or batched.
    #[error(transparent)]
    Data(#[from] vprompt_data::DataError),
    /// A mapping could not be built, fitted, applied, saved or loaded.
    #[error(transparent)]
    Mapping(#[from] vprompt_mapping::MappingError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(#[from] vprompt_train::TrainError),
    /// A device name could not be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A run could not be assembled, trained, resumed or loaded back.
    #[error(transparent)]
    Run(#[from] vprompt_run::RunError),
}

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The types most programs use, plus Burn's prelude (`Device`, `Tensor`, `Module`, ...).
pub mod prelude {
    pub use burn::prelude::*;

    pub use crate::data::{fashion_mnist, prepare};
    pub use crate::{
        Backbone, BlackBoxConfig, BlackBoxModel, BlackBoxTrainer, Dataset, ImageBackbone, LabelMappingConfig,
        LinearProbeConfig, LoadedRun, LocalModel, Mapping, Normalization, OptimizerConfig, OutputKind,
        OutputMapping, PreparedDataset, Preprocess, Preset, PromptedClassifier, Recipe, Report, Run,
        RunConfig, ScheduleConfig, TextEncoder, Trainer, TrainingConfig, ZerothOrderConfig,
    };
    pub use crate::{
        ConditionalPromptConfig, EvalLocation, FixedPatchPromptConfig, FullImagePromptConfig,
        PaddingPromptConfig, Phase, Prompt, PromptConfig, PromptInit, PromptSpace, RandomPatchPromptConfig,
        ResizeFilter, ShrinkFramePromptConfig, VisualPrompt,
    };
}
