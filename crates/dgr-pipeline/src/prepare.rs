//! The prepare stage: a dataset imported into a dgr dataset directory.

use std::path::Path;

use crate::config::Config;
use crate::error::{Context, Result};
use dgr_core::import::{self, ImportOptions, ImportSummary};
use tracing::info;

use dgr_core::progress::Progress;

/// Imports the configured source into `output` and logs the summary.
pub fn prepare(config: &Config, output: &Path, overwrite: bool, progress: &dyn Progress) -> Result<ImportSummary> {
    let p = &config.prepare;
    let options = ImportOptions { skip_invalid: p.skip_invalid, overwrite, split: p.split };
    info!(format = %p.format, input = %p.input.display(), output = %output.display(), "importing dataset");
    let summary = import::import(p.format, &p.input, output, &options, progress)
        .with_context(|| format!("cannot import {} as {}", p.input.display(), p.format))?;
    info!(passages = summary.passages, "imported corpus");
    for (split, n) in &summary.queries {
        let judged = summary.qrels.get(split).copied().unwrap_or(0);
        info!(split = %split, queries = n, qrels = judged, "imported queries");
    }
    for (reason, n) in &summary.dropped {
        info!(count = n, "left out by design: {reason}");
    }
    for (reason, n) in &summary.skipped {
        info!(count = n, "skipped as invalid: {reason}");
    }
    Ok(summary)
}
