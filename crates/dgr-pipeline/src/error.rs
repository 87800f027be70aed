//! The pipeline's one error type: every crate's errors, plain input errors that say what to
//! do, and context wrapped around either (what the stage was doing when it failed).

use crate::ranks::Ending;

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An input or setting the stage cannot work with; the message names it and the fix.
    #[error("{0}")]
    Invalid(String),
    /// What was being done when `source` happened.
    #[error("{message}")]
    Context {
        message: String,
        #[source]
        source: Box<PipelineError>,
    },
    /// A training run that stopped on request or was aborted by its job: not a failure of
    /// this process, and the exit code says what to do next.
    #[error(transparent)]
    Ended(#[from] Ending),
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
    #[error(transparent)]
    Bm25(#[from] dgr_bm25::Bm25Error),
    #[error(transparent)]
    Index(#[from] dgr_index::IndexError),
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
    #[error(transparent)]
    Teacher(#[from] dgr_teacher::TeacherError),
    #[error(transparent)]
    Train(#[from] dgr_trainer::engine::TrainError),
    #[error(transparent)]
    Coordinator(#[from] dgr_coordinator::CoordinatorError),
    #[error(transparent)]
    Collective(#[from] dgr_collective::CollectiveError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl PipelineError {
    /// The ending of a stopped or aborted training run, however deep in the context.
    pub fn ending(&self) -> Option<&Ending> {
        match self {
            PipelineError::Ended(ending) => Some(ending),
            PipelineError::Context { source, .. } => source.ending(),
            _ => None,
        }
    }
}

/// An error and its causes on one line, `outer: inner: root`, as a worker reports a failed shard.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Adds what was being done to an error, as `anyhow::Context` does, keeping the type.
pub trait Context<T> {
    fn context(self, message: impl Into<String>) -> Result<T>;
    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| PipelineError::Context { message: message.into(), source: Box::new(e.into()) })
    }

    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| PipelineError::Context { message: message().into(), source: Box::new(e.into()) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(message.into()))
    }

    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(message().into()))
    }
}

/// What a read of `path` gave, `None` when there is nothing there (a stage that has not run
/// yet), an error naming the path otherwise: `if_present(std::fs::read(&path), &path)`.
pub fn if_present<T>(read: std::io::Result<T>, path: &std::path::Path) -> Result<Option<T>> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Returns a [`PipelineError::Invalid`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::PipelineError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::{Context, PipelineError};
    use crate::ranks::Ending;

    #[test]
    fn context_keeps_the_cause_and_the_ending_is_found_beneath_it() {
        let inner: Result<(), PipelineError> = Err(Ending::Stopped { step: Some(4) }.into());
        let error = inner.context("stage 2").unwrap_err();
        assert_eq!(error.to_string(), "stage 2");
        assert!(matches!(error.ending(), Some(Ending::Stopped { step: Some(4) })));
        let source = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
        assert!(source.contains("after step 4"), "{source}");
        let missing: Option<u8> = None;
        assert_eq!(missing.context("no index").unwrap_err().to_string(), "no index");
    }
}
