use std::path::PathBuf;

/// Everything that can go wrong while training or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A prompt error.
    #[error(transparent)]
    Prompt(#[from] vprompt_prompt::PromptError),
    /// A backbone error.
    #[error(transparent)]
    Backbone(#[from] vprompt_backbone::BackboneError),
    /// A mapping error.
    #[error(transparent)]
    Mapping(#[from] vprompt_mapping::MappingError),
    /// A data error.
    #[error(transparent)]
    Data(#[from] vprompt_data::DataError),
    /// A setting is out of range or settings contradict each other.
    #[error("invalid training setting: {0}")]
    InvalidConfig(String),
    /// The loss became NaN or infinite; the last checkpoint (if any) is intact.
    #[error(
        "the loss became {loss} at step {step} (epoch {epoch}); training stopped. The last good \
         checkpoint is intact: lower the learning rate, or check the data, and resume"
    )]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// Global optimisation step.
        step: u64,
        /// Epoch.
        epoch: usize,
    },
    /// A run directory or checkpoint file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A black-box model's query failed or returned the wrong number of scores.
    #[error("black-box query failed: {0}")]
    Query(#[source] crate::blackbox::QueryError),
    /// A checkpoint is unreadable or belongs to another run.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
