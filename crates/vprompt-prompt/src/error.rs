use std::path::PathBuf;

/// Everything that can go wrong when configuring, applying, saving or loading a visual prompt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// A size that must be positive is zero.
    #[error("{template} prompt: `{field}` must be at least 1, got 0")]
    ZeroSize {
        /// The template being configured, e.g. `padding`.
        template: &'static str,
        /// The offending config field.
        field: &'static str,
    },
    /// The image the prompt is made for has an empty side.
    #[error("{template} prompt: image size {height}x{width} has an empty side")]
    EmptyImage {
        /// The template being configured.
        template: &'static str,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// A frame of width `pad` on both sides leaves no image inside (`2 * pad >= side`).
    #[error(
        "{template} prompt: a frame of width {pad} needs 2 * {pad} < both sides, \
         but the image is {height}x{width}; the largest frame for this image is {max_pad}"
    )]
    FrameTooWide {
        /// The template being configured.
        template: &'static str,
        /// Requested frame width.
        pad: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Largest valid frame width for this image.
        max_pad: usize,
    },
    /// A patch does not fit inside the image at the requested position.
    #[error(
        "{template} prompt: a {size}x{size} patch at row {row}, column {col} does not fit \
         in a {height}x{width} image"
    )]
    PatchOutOfBounds {
        /// The template being configured.
        template: &'static str,
        /// Patch side.
        size: usize,
        /// Top row of the patch.
        row: usize,
        /// Left column of the patch.
        col: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// The standard deviation of a normal initialisation is NaN, infinite or negative.
    #[error("{template} prompt: initial standard deviation must be finite and >= 0, got {std}")]
    InvalidInitStd {
        /// The template being configured.
        template: &'static str,
        /// The offending value.
        std: f64,
    },
    /// Images passed to `apply` do not have the shape the prompt was built for.
    #[error("prompt expects images of shape [batch, {channels}, {height}, {width}], got {actual:?}")]
    InputShape {
        /// Expected channel count.
        channels: usize,
        /// Expected height.
        height: usize,
        /// Expected width.
        width: usize,
        /// The shape that was passed.
        actual: [usize; 4],
    },
    /// Learned values given to [`Prompt::with_learned`](crate::Prompt::with_learned) have the wrong shape.
    #[error("the prompt's learned values have shape {expected:?}, got {actual:?}")]
    LearnedShape {
        /// The stored shape.
        expected: [usize; 4],
        /// The given shape.
        actual: [usize; 4],
    },
    /// A conditional prompt's template is itself conditional.
    #[error(
        "conditional prompt: the template must be a fixed template (Padding, FixedPatch, \
         RandomPatch, FullImage, ShrinkFrame), not another Conditional"
    )]
    NestedConditional,
    /// A prompt config (JSON) could not be parsed.
    #[error("invalid prompt config: {0}")]
    ConfigParse(#[source] serde_json::Error),
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A prompt file exists but is not a valid vprompt prompt file.
    #[error("{path} is not a valid prompt file: {reason}")]
    InvalidFile {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Encoding a PNG failed.
    #[error("{path}: cannot write PNG: {source}")]
    Png {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

/// `Result` with [`PromptError`].
pub type Result<T, E = PromptError> = std::result::Result<T, E>;

impl From<vprompt_core::pack::PackError> for PromptError {
    fn from(error: vprompt_core::pack::PackError) -> Self {
        use vprompt_core::pack::PackError;
        match error {
            PackError::Io { path, source } => PromptError::Io { path, source },
            PackError::Invalid { path, reason } => PromptError::InvalidFile { path, reason },
            PackError::Tensors { path, problems } => PromptError::InvalidFile {
                path,
                reason: problems.join("; "),
            },
        }
    }
}
