//! `dgr train-distill`: stage 2, alone or as one rank of a data-parallel job
//! (dgr_pipeline::stage2).

use dgr_pipeline::Config;
use dgr_pipeline::stage2::train_distill;
use figment::Figment;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Optimisation steps (default: train_distill.engine.steps).
    #[arg(long)]
    steps: Option<u64>,
    /// Start over: remove the stage's checkpoints instead of resuming from the newest.
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    ranks: super::RankArgs,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(steps) = self.steps {
            figment = figment.merge(("train_distill.engine.steps", steps));
        }
        figment
    }
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    Ok(train_distill(config, args.fresh, &args.ranks.place(), &Bar::new())?)
}
