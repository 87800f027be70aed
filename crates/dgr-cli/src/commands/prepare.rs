//! `dgr prepare`: import a dataset (dgr_pipeline::prepare).

use std::path::PathBuf;

use dgr_core::import::DatasetFormat;
use dgr_pipeline::Config;
use dgr_pipeline::prepare::prepare;
use figment::Figment;

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
    prepare(config, &output, args.overwrite, &Bar::new())?;
    Ok(())
}
