use std::path::PathBuf;

pub use vprompt_core::ConfigError;

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
    /// A setting is out of range: its key path and the reason.
    #[error("invalid training setting {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The pieces of a run do not fit together: a prompt made for another image size, a mapping
    /// for other outputs, splits prepared at another size or with other classes.
    #[error("{0}")]
    Mismatch(String),
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
        /// Epoch (1-based).
        epoch: usize,
    },
    /// A learned value grew past the divergence limit; the last good checkpoint is intact.
    #[error(
        "the prompt diverged: a value reached {value:.3e} after epoch {epoch} (step {step}), past the \
         limit {limit} (`divergence_limit`); training stopped, the last good checkpoint is intact: \
         lower the learning rate and resume, or raise the limit"
    )]
    Diverged {
        /// The largest magnitude.
        value: f64,
        /// The limit.
        limit: f64,
        /// Epoch (1-based).
        epoch: usize,
        /// Global optimisation step.
        step: u64,
    },
    /// A run directory or checkpoint file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A black-box model's query failed or returned the wrong number of scores.
    #[error("black-box query failed: {0}")]
    Query(#[source] crate::black_box::QueryError),
    /// An [`EpochObserver`](crate::EpochObserver) failed (drawing a run's curves, say); the
    /// epoch's checkpoint is written.
    #[error("an observer of the run failed")]
    Observer(#[source] Box<dyn std::error::Error + Send + Sync>),
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

impl From<vprompt_core::pack::PackError> for TrainError {
    fn from(error: vprompt_core::pack::PackError) -> Self {
        use vprompt_core::pack::PackError;
        match error {
            PackError::Io { path, source } => TrainError::Io { path, source },
            PackError::Invalid { path, reason } => TrainError::Checkpoint { path, reason },
            PackError::Tensors { path, problems } => TrainError::Checkpoint {
                path,
                reason: problems.join("; "),
            },
        }
    }
}
