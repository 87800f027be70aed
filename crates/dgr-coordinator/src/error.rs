use std::path::PathBuf;

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("{path}: ledger database: {source}")]
    Ledger {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The ledger on disk belongs to a different job.
    #[error("{path}: {message}")]
    JobMismatch { path: PathBuf, message: String },
    #[error("unknown worker {0} (register first)")]
    UnknownWorker(i64),
    #[error("unknown shard {0}")]
    UnknownShard(i64),
    #[error("unknown lease {0}")]
    UnknownLease(i64),
    #[error("lease {lease} is for shard {leased}, not shard {claimed}")]
    LeaseMismatch { lease: i64, leased: i64, claimed: i64 },
    #[error("this job runs stage `{job}`, not `{worker}`")]
    WrongRole { job: String, worker: String },
    /// The coordinator refused a request (status and its reason).
    #[error("coordinator refused the request ({status}): {reason}")]
    Rejected { status: u16, reason: String },
    /// The coordinator stayed unreachable for the whole retry window.
    #[error("coordinator at {url} unreachable for {seconds:.0} s: {last_error}")]
    Unreachable { url: String, seconds: f64, last_error: String },
    /// A training rank the job does not take, and why.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Server(String),
}
