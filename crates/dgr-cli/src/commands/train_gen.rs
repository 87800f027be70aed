//! `dgr train-gen`: stage 1, alone or as one rank of a data-parallel job (dgr_pipeline::stage1).

use dgr_pipeline::Config;
use dgr_pipeline::stage1::train_gen;
use figment::Figment;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Optimisation steps (default: train_gen.steps).
    #[arg(long)]
    steps: Option<usize>,
    /// Pairs per micro-batch (default: train_gen.engine.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Start over: remove the stage's checkpoints instead of resuming from the newest.
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub ranks: super::RankArgs,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(steps) = self.steps {
            figment = figment.merge(("train_gen.engine.steps", steps));
        }
        if let Some(batch_size) = self.batch_size {
            figment = figment.merge(("train_gen.engine.batch_size", batch_size));
        }
        figment
    }
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    Ok(train_gen(config, args.fresh, &args.ranks.place(), &Bar::new())?)
}
