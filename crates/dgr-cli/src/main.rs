//! `dgr`: the command-line front of the dgr pipeline. Thin glue: parsing, configuration
//! layering, logging, progress bars and exit codes live here; the work lives in the crates.

mod commands;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use dgr_pipeline::PipelineError;
use dgr_pipeline::ranks::Ending;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "dgr",
    version,
    about = "Generative retrieval with distillation: data, baselines, training, evaluation"
)]
struct Cli {
    /// A TOML file layered over the embedded defaults (configs/demo.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log format on stderr; the level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: commands::Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs written to files (launch scripts, clusters) stay plain.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    dgr_model::allocator::keep_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = cli.config.as_deref();
    match commands::run(cli.command, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A run stopped on request, or aborted because another rank failed, says so with
            // its own exit code (docs/operations.md).
            let ending = err.downcast_ref::<PipelineError>().and_then(PipelineError::ending);
            let label = if matches!(ending, Some(Ending::Stopped { .. })) { "stopped" } else { "error" };
            match cli.log_format {
                LogFormat::Json => tracing::error!("{err:#}"),
                LogFormat::Text => eprintln!("{label}: {err:#}"),
            }
            ending.map_or(ExitCode::FAILURE, |ending| ExitCode::from(ending.exit_code()))
        }
    }
}
