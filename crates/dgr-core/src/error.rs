//! The one error type of the data layer. Every variant names the file it is about, and input
//! errors also name the position (line or record) and the field, so a user can fix the input.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input file a problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a line-oriented file (TSV, JSONL, CSV, TREC).
    Line(u64),
    /// A record named by its key, for inputs without useful lines (one big JSON object).
    Record(String),
    /// Row of an Arrow file (0-based, as pyarrow counts).
    Row(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Record(key) => write!(f, "record {key:?}"),
            Position::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A record of an input file is malformed. `reason` is a short fixed phrase (it keys the
    /// skipped-records summary); `detail` carries the offending value.
    #[error("{path}: {position}: field `{field}`: {reason}{}", fmt_detail(.detail))]
    Input { path: PathBuf, position: Position, field: String, reason: &'static str, detail: String },

    /// A whole file is not what it claims to be (wrong format, version or schema).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    #[error("{path}: Arrow IPC error")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },

    #[error("invalid configuration: {0}")]
    Config(String),
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(": {detail}") }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), action, source }
    }

    pub fn input(
        path: impl Into<PathBuf>,
        position: Position,
        field: impl Into<String>,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Input { path: path.into(), position, field: field.into(), reason, detail: detail.into() }
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), message: message.into() }
    }

    pub fn arrow(path: impl Into<PathBuf>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow { path: path.into(), source }
    }
}
