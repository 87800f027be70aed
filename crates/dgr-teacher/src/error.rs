pub type Result<T, E = TeacherError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    #[error(transparent)]
    Data(#[from] dgr_core::Error),
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
    /// Candidates that name a passage or query the dataset does not have.
    #[error("{source_name}: {message}")]
    Candidates { source_name: String, message: String },
    /// A query range outside the candidate set.
    #[error("queries {first}..{end} are outside the candidate set of {len} queries")]
    Range { first: usize, end: usize, len: usize },
    /// Work stopped on request (the worker lost its lease).
    #[error("cancelled")]
    Cancelled,
}
