//! `<job.dir>/metrics.jsonl`: one JSON line per evaluation the job makes.

use std::io::Write as _;

use dgr_core::atomic::write_atomic;
use tracing::info;

use crate::error::{Context, Result};

/// Appends lines to `metrics.jsonl`, rewriting it atomically.
pub fn append_metrics(path: &std::path::Path, lines: &[serde_json::Value]) -> Result<()> {
    let mut contents = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for line in lines {
        serde_json::to_writer(&mut contents, line)?;
        contents.write_all(b"\n")?;
    }
    write_atomic(path, &contents)?;
    info!(path = %path.display(), "appended metrics");
    Ok(())
}
