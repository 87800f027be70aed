use std::path::{Path, PathBuf};

use crate::config::Config;
use anyhow::Context;
use dgr_core::import::{self, DatasetFormat, ImportOptions, ImportSummary};
use figment::Figment;
use tracing::info;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Source layout: beir, msmarco, dpr or wiki-vital (default: prepare.format).
    #[arg(long)]
    format: Option<DatasetFormat>,
    /// Source file or directory (default: prepare.input).
    input: Option<PathBuf>,
    /// Output dataset directory (default: <job.dir>/data).
    output: Option<PathBuf>,
    /// Skip malformed records and count them in the summary instead of failing.
    #[arg(long)]
    skip_invalid: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    overwrite: bool,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(format) = self.format {
            figment = figment.merge(("prepare.format", format));
        }
        if let Some(input) = &self.input {
            figment = figment.merge(("prepare.input", input));
        }
        if self.skip_invalid {
            figment = figment.merge(("prepare.skip_invalid", true));
        }
        figment
    }
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| config.job.data_dir());
    prepare(config, &output, args.overwrite)?;
    Ok(())
}

/// Imports the configured source into `output` and logs the summary.
pub fn prepare(config: &Config, output: &Path, overwrite: bool) -> anyhow::Result<ImportSummary> {
    let p = &config.prepare;
    let options = ImportOptions { skip_invalid: p.skip_invalid, overwrite, split: p.split };
    info!(format = %p.format, input = %p.input.display(), output = %output.display(), "importing dataset");
    let summary = import::import(p.format, &p.input, output, &options, &Bar::new())
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
