//! [`RunError`]: everything that can go wrong while assembling, training, resuming or loading a
//! run, an experiment or a served model.
//!
//! Each variant's message says what happened without repeating its source: print the whole
//! chain (`{:#}` with anyhow, or walk [`std::error::Error::source`]) to see the cause too.

use std::path::{Path, PathBuf};

pub use vprompt_core::ConfigError;

/// What went wrong in the run layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A setting is out of range or missing: its key path and the reason.
    #[error("invalid run config: {0}")]
    Config(#[from] ConfigError),
    /// A prompt could not be built, saved or loaded.
    #[error(transparent)]
    Prompt(#[from] vprompt_prompt::PromptError),
    /// A backbone could not be loaded or run.
    #[error(transparent)]
    Backbone(#[from] vprompt_backbone::BackboneError),
    /// A dataset could not be read, split or prepared.
    #[error(transparent)]
    Data(#[from] vprompt_data::DataError),
    /// A mapping could not be built, fitted or loaded.
    #[error(transparent)]
    Mapping(#[from] vprompt_mapping::MappingError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(#[from] vprompt_train::TrainError),
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was tried: `read`, `write`, `create`, `delete`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A config or record file could not be parsed.
    #[error("{} is not a valid {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it should have been (`run config`, `results file`).
        what: &'static str,
        /// What the parser said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The run directory holds a run of other settings: resuming it would continue another run.
    #[error(
        "{} holds another run ({}); use a new run_dir, or the same settings to resume it",
        dir.display(),
        differences.join("; ")
    )]
    OtherRun {
        /// The run directory.
        dir: PathBuf,
        /// The settings that differ, as `key.path: old -> new`.
        differences: Vec<String>,
    },
    /// The run's inputs (data, classes, weights) are not the ones it recorded, or what is asked
    /// of a run directory does not fit what it holds.
    #[error("{}: {reason}", dir.display())]
    RunDir {
        /// The run directory.
        dir: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A black-box model outside this process failed.
    #[error("black-box model: {0}")]
    Remote(String),
    /// What the run layer was doing when `source` went wrong.
    #[error("{context}")]
    Context {
        /// What was being done (`run Fashion-MNIST / Lite0 / VP / seed 0`).
        context: String,
        /// The error.
        #[source]
        source: Box<RunError>,
    },
    /// A request that cannot be carried out as asked, with the reason and a remedy.
    #[error("{0}")]
    Refused(String),
}

/// `Result` with [`RunError`].
pub type Result<T, E = RunError> = std::result::Result<T, E>;

impl RunError {
    /// A refusal of a run directory's content.
    pub(crate) fn run_dir(dir: &Path, reason: impl Into<String>) -> Self {
        Self::RunDir {
            dir: dir.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The innermost error of the run layer's own: the cause behind any [`RunError::Context`].
    pub fn root(&self) -> &RunError {
        match self {
            RunError::Context { source, .. } => source.root(),
            e => e,
        }
    }
}

/// An I/O error on `path` while trying `action`.
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.to_path_buf();
    move |source| RunError::Io { action, path, source }
}

/// What the run layer was doing, added to an error as a [`RunError::Context`].
pub(crate) trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps the error with the context `f` makes (only on an error).
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<RunError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| RunError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| RunError::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages do not repeat their cause: the chain printed whole says each thing once.
    #[test]
    fn each_link_of_the_chain_says_its_own_part() {
        let missing = std::fs::read("/nonexistent/vprompt/run.json")
            .map_err(io("read", Path::new("/nonexistent/vprompt/run.json")))
            .context("open the run")
            .unwrap_err();
        let mut chain = vec![missing.to_string()];
        let mut source = std::error::Error::source(&missing);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert_eq!(chain[0], "open the run");
        assert_eq!(chain[1], "cannot read /nonexistent/vprompt/run.json");
        assert!(chain[2].contains("No such file"), "{chain:?}");
        assert_eq!(chain.len(), 3);
        assert!(matches!(missing.root(), RunError::Io { action: "read", .. }));
    }
}
