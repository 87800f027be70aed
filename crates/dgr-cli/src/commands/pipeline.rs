//! `dgr run`: the whole configured job (dgr_pipeline::job), ending with the results table.

use std::path::Path;

use anyhow::Context;
use dgr_pipeline::Config;
use dgr_pipeline::job::{RunOptions, Until, run as run_job};
use dgr_pipeline::local::Program;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Run every stage again, even those that are up to date.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this stage (prepare, bm25, index, train-gen, retrieve, teacher,
    /// train-distill) and evaluate what there is.
    #[arg(long, value_parser = parse_until, default_value = "train-distill")]
    until: Until,
}

fn parse_until(name: &str) -> Result<Until, String> {
    Until::parse(name).map_err(|e| e.to_string())
}

pub fn run(config: &Config, config_file: Option<&Path>, args: &Args) -> anyhow::Result<()> {
    let program = Program {
        path: std::env::current_exe().context("cannot find this program's file")?,
        config_file: config_file.map(Path::to_path_buf),
    };
    let options = RunOptions { overwrite: args.overwrite, until: args.until, program: Some(program) };
    let job = run_job(config, &options, &Bar::new())?;
    let ran: Vec<String> = job
        .stages
        .iter()
        .map(|s| match s.seconds {
            Some(seconds) => format!("{} {seconds:.0} s", s.stage),
            None => format!("{} (up to date)", s.stage),
        })
        .collect();
    println!("== {} job in {}: {}", job.results.dataset, config.job.dir.display(), ran.join(", "));
    print!("{}", job.results.table());
    Ok(())
}
