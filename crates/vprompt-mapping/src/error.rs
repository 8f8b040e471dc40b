use std::path::PathBuf;

/// Everything that can go wrong when building, fitting, applying, saving or loading a mapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// More target classes than the model has outputs.
    #[error(
        "{mapping}: {classes} target classes need at least as many source outputs, the model has {sources}"
    )]
    TooManyClasses {
        /// The mapping.
        mapping: &'static str,
        /// Target classes.
        classes: usize,
        /// Source outputs.
        sources: usize,
    },
    /// A mapping names a source output the model does not have.
    #[error(
        "target class {target} is mapped to source output {source_index}, but the model has {sources} outputs"
    )]
    SourceOutOfRange {
        /// The target class.
        target: usize,
        /// The offending source index.
        source_index: usize,
        /// Number of source outputs.
        sources: usize,
    },
    /// Two target classes share a source output, so they could never be told apart.
    #[error("source output {source_index} is mapped to both target class {first} and target class {second}")]
    DuplicateSource {
        /// The shared source output.
        source_index: usize,
        /// One target class.
        first: usize,
        /// The other.
        second: usize,
    },
    /// A target class has no source output.
    #[error("target class {0} is mapped to no source output")]
    EmptyTarget(usize),
    /// Fitting data lacks a class: frequency-based mappings need every class in the data.
    #[error("{mapping}: target class {class} does not occur in the fitting data")]
    MissingClass {
        /// The mapping.
        mapping: &'static str,
        /// The absent class.
        class: usize,
    },
    /// A label is not a target class.
    #[error("label {label} is not one of the {classes} target classes")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A tensor or matrix has the wrong shape.
    #[error("{what}: expected {expected}, got {actual}")]
    Shape {
        /// What was checked.
        what: &'static str,
        /// Expected shape, in words.
        expected: String,
        /// Actual shape, in words.
        actual: String,
    },
    /// A setting is out of range.
    #[error("invalid mapping setting: {0}")]
    InvalidConfig(String),
    /// The text encoder failed while building a CLIP head.
    #[error("text encoder: {0}")]
    TextEncoder(String),
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid mapping file.
    #[error("{path} is not a valid mapping file: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`MappingError`].
pub type Result<T, E = MappingError> = std::result::Result<T, E>;

impl From<vprompt_core::pack::PackError> for MappingError {
    fn from(error: vprompt_core::pack::PackError) -> Self {
        use vprompt_core::pack::PackError;
        match error {
            PackError::Io { path, source } => MappingError::Io { path, source },
            PackError::Invalid { path, reason } => MappingError::InvalidFile { path, reason },
            PackError::Tensors { path, problems } => MappingError::InvalidFile {
                path,
                reason: problems.join("; "),
            },
        }
    }
}
