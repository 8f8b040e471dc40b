use std::path::PathBuf;

/// Everything that can go wrong when loading, importing or running a backbone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackboneError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A preset was asked for without a weights file at the given path.
    #[error(
        "no weights for preset `{preset}` at {path}: vprompt ships no {preset} weights. Give the checkpoint \
         its library publishes (torchvision .pth, timm or Hugging Face .safetensors, open_clip .bin; an \
         hf:ORG/REPO name with the `hub` feature), or export ONNX (`python scripts/export_onnx.py \
         {export_name} {preset}.onnx`) and convert it (`vprompt import {preset} {preset}.onnx {path}`)"
    )]
    MissingWeights {
        /// The preset's name.
        preset: &'static str,
        /// The model name `scripts/export_onnx.py` takes.
        export_name: &'static str,
        /// Where the weights were looked for.
        path: PathBuf,
    },
    /// The file is not a readable Burnpack weights file (truncated, corrupt, or another format).
    #[error("{path} is not a valid weights file: {reason}")]
    InvalidWeights {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The weights file was written for another preset.
    #[error("{path} holds weights of `{found}`, not of `{expected}`")]
    WrongModel {
        /// The file involved.
        path: PathBuf,
        /// The preset that was asked for.
        expected: &'static str,
        /// The preset recorded in the file.
        found: String,
    },
    /// The weights file's tensors do not match the preset's architecture.
    #[error("{path} does not fit preset `{preset}`: {}", problems.join("; "))]
    TensorMismatch {
        /// The file involved.
        path: PathBuf,
        /// The preset that was asked for.
        preset: &'static str,
        /// Each missing, unexpected or mis-shaped tensor, by name.
        problems: Vec<String>,
    },
    /// An input tensor does not have the shape the backbone expects.
    #[error("backbone `{backbone}` expects input {expected}, got {actual:?}")]
    InputShape {
        /// The backbone's name.
        backbone: String,
        /// The expected shape, in words (e.g. `[batch, 3, 224, 224]`).
        expected: String,
        /// The shape that was passed.
        actual: Vec<usize>,
    },
    /// An image preset was asked for as a text encoder, or the other way round.
    #[error("preset `{preset}` is {actual}: build it with {constructor}")]
    WrongModality {
        /// The preset's name.
        preset: &'static str,
        /// What it is: `an image model` or `a text encoder`.
        actual: &'static str,
        /// The type to build it with.
        constructor: &'static str,
    },
    /// Weights named on the Hugging Face Hub (`hf:ORG/REPO`) could not be had.
    #[error("{name}: {reason}")]
    Hub {
        /// The hub name as given.
        name: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// An argument is out of its range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A preset name is not known.
    #[error("unknown preset `{0}`; known presets: {known}", known = crate::Preset::names().join(", "))]
    UnknownPreset(String),
    /// The ONNX file could not be parsed.
    #[error("{path} is not an ONNX model burn-onnx can read: {reason}")]
    InvalidOnnx {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// burn-onnx could not generate code for the ONNX file.
    #[error("burn-onnx could not convert {path}: {reason}")]
    Codegen {
        /// The file involved.
        path: PathBuf,
        /// burn-onnx's message.
        reason: String,
    },
    /// The ONNX file's graph differs from the preset's architecture.
    #[error(
        "{path} is not a `{preset}` graph: its generated code differs from the preset's at line {line} \
         (expected `{expected}`, found `{found}`). Export it with `python scripts/export_onnx.py \
         {export_name}` (dynamo exporter, opset 18, dynamic batch)"
    )]
    ArchitectureMismatch {
        /// The file involved.
        path: PathBuf,
        /// The preset that was asked for.
        preset: &'static str,
        /// The model name `scripts/export_onnx.py` takes.
        export_name: &'static str,
        /// First differing line (1-based).
        line: usize,
        /// The preset's line.
        expected: String,
        /// The ONNX file's line.
        found: String,
    },
}

/// `Result` with [`BackboneError`].
pub type Result<T, E = BackboneError> = std::result::Result<T, E>;
