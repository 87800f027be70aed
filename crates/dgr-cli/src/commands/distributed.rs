//! `dgr coordinator`, `dgr worker` and `dgr status`: the multi-process form of the stages
//! (dgr_pipeline::services), and a running coordinator's progress on the terminal.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use dgr_coordinator::CoordinatorError;
use dgr_coordinator::api::TrainStatus;
use dgr_coordinator::client::Client;
use dgr_pipeline::Config;
use dgr_pipeline::retrieve::RetrieveTask;
use dgr_pipeline::services::{self, ShardStage};

use super::retrieve::StudentArg;
use figment::Figment;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Teacher scoring of candidate lists into rank-list shards.
    Teacher,
    /// Generative retrieval of a split into candidate shards.
    Retrieve,
    /// The rendezvous and watch of data-parallel training ranks (`--stage` says which).
    Train,
}

/// The training stages whose ranks a `--role train` coordinator brings together.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainStage {
    TrainGen,
    TrainDistill,
}

impl From<TrainStage> for services::TrainStage {
    fn from(stage: TrainStage) -> Self {
        match stage {
            TrainStage::TrainGen => services::TrainStage::TrainGen,
            TrainStage::TrainDistill => services::TrainStage::TrainDistill,
        }
    }
}

#[derive(ClapArgs)]
pub struct CoordinatorArgs {
    /// The stage whose shards are leased, or `train` for the ranks of a training stage.
    #[arg(long, value_enum)]
    role: Role,
    /// With `--role train`: the training stage the ranks run.
    #[arg(long, value_enum)]
    stage: Option<TrainStage>,
    /// With `--role train`: ranks of the job (default: ranks.world_size).
    #[arg(long)]
    world_size: Option<usize>,
    /// Split the stage runs on.
    #[arg(long, default_value = "train")]
    split: String,
    /// Address to listen on (default: coordinator.bind; port 0 picks a free one).
    #[arg(long)]
    bind: Option<String>,
    /// Forget an earlier job of this stage and split (its ledger and output) and start over.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    shards: RetrieveArgs,
}

/// With `--role retrieve`: which student, and how much of the split (coordinator and workers
/// must agree).
#[derive(ClapArgs)]
pub struct RetrieveArgs {
    /// The student that retrieves.
    #[arg(long, value_enum, default_value_t = StudentArg::Gr)]
    student: StudentArg,
    /// Only the first N queries of the split.
    #[arg(long)]
    limit: Option<usize>,
}

impl RetrieveArgs {
    fn stage(&self, role: Role, split: &str) -> ShardStage {
        match role {
            Role::Retrieve => ShardStage::Retrieve(RetrieveTask {
                split: split.to_string(),
                student: self.student.into(),
                limit: self.limit,
                index_dir: None,
            }),
            _ => ShardStage::Teacher { split: split.to_string() },
        }
    }
}

#[derive(ClapArgs)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    role: Role,
    /// The coordinator, e.g. http://node0:7878.
    #[arg(long)]
    coordinator: String,
    #[arg(long, default_value = "train")]
    split: String,
    /// Name shown by `dgr status` (default: host:pid).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    shards: RetrieveArgs,
}

#[derive(ClapArgs)]
pub struct StatusArgs {
    /// A running coordinator, e.g. http://127.0.0.1:7878. Without it: the stages of the
    /// configured job (`dgr run`), from its records.
    #[arg(long)]
    coordinator: Option<String>,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

impl CoordinatorArgs {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(bind) = &self.bind {
            figment = figment.merge(("coordinator.bind", bind));
        }
        if let Some(world_size) = self.world_size {
            figment = figment.merge(("ranks.world_size", world_size));
        }
        figment
    }
}

pub fn coordinator(config: &Config, args: &CoordinatorArgs) -> anyhow::Result<()> {
    if args.role == Role::Train {
        let stage = args.stage.context("--role train needs --stage train-gen or --stage train-distill")?;
        return Ok(services::serve_training(config, stage.into())?);
    }
    Ok(services::serve_shards(config, &args.shards.stage(args.role, &args.split), args.overwrite)?)
}

pub fn worker(config: &Config, args: &WorkerArgs) -> anyhow::Result<()> {
    if args.role == Role::Train {
        bail!("training ranks are `dgr train-gen|train-distill --coordinator URL`, not workers");
    }
    let stage = args.shards.stage(args.role, &args.split);
    Ok(services::work(config, &stage, &args.coordinator, args.name.clone())?)
}

pub fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let Some(coordinator) = &args.coordinator else {
        return print_job_status(config, args.json);
    };
    let token = services::token(config)?;
    let client = Client::new(coordinator, &token, Duration::from_secs(10))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = match runtime.block_on(client.status()) {
        Ok(status) => status,
        // A training coordinator has no shards: it answers on its own route.
        Err(CoordinatorError::Rejected { status: 404, .. }) => {
            return print_train_status(&runtime.block_on(client.train_status())?, args.json);
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let eta = status.eta_seconds.map_or("-".to_string(), |s| format!("{s:.0} s"));
    println!(
        "{} {}: {} shards, {} done, {} leased, {} pending; {} leases granted; {:.0} s elapsed, ETA {eta}",
        status.stage,
        status.split,
        status.shards,
        status.done,
        status.leased,
        status.pending,
        status.leases_granted,
        status.elapsed_seconds
    );
    println!("{:>6}  {:<28} {:>6} {:>10} {:>10}  shard", "worker", "name", "done", "shards/min", "seen (s)");
    for w in &status.workers {
        let shard = w.shard.map_or("-".to_string(), |s| s.to_string());
        println!(
            "{:>6}  {:<28} {:>6} {:>10.2} {:>10.1}  {shard}",
            w.id, w.name, w.shards_done, w.shards_per_minute, w.seconds_since_seen
        );
    }
    Ok(())
}

fn print_train_status(status: &TrainStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let reason = status.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    println!(
        "{}: {} of {} ranks, {}{reason}; {:.0} s elapsed",
        status.stage,
        status.ranks.len(),
        status.world_size,
        status.state,
        status.elapsed_seconds
    );
    println!(
        "{:>4}  {:<28} {:>4} {:>5} {:>7} {:<10} {:>8} {:>8} {:>10} {:>8}",
        "rank", "name", "node", "local", "step", "phase", "s/step", "AR s", "AR MB/s", "seen (s)"
    );
    let number = |value: Option<f64>, scale: f64| value.map_or("-".to_string(), |v| format!("{:.2}", v / scale));
    for r in &status.ranks {
        let phase = format!("{:?}", r.phase).to_lowercase();
        println!(
            "{:>4}  {:<28} {:>4} {:>5} {:>7} {:<10} {:>8} {:>8} {:>10} {:>8.1}",
            r.rank.map_or("-".to_string(), |rank| rank.to_string()),
            r.name,
            r.node,
            r.local_rank,
            r.step,
            r.outcome.map_or(phase, |o| format!("{o:?}").to_lowercase()),
            number(r.step_seconds, 1.0),
            number(r.all_reduce_seconds, 1.0),
            number(r.all_reduce_bytes_per_second, 1e6),
            r.seconds_since_seen
        );
    }
    Ok(())
}

/// The job's stages as `dgr run` recorded them.
fn print_job_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let stages = dgr_pipeline::job::status(config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stages)?);
        return Ok(());
    }
    if stages.is_empty() {
        println!("{}: no stage has run yet (`dgr run` starts the job)", config.job.dir.display());
        return Ok(());
    }
    println!("job {}", config.job.dir.display());
    println!("{:<22} {:<8} {:>10}  progress", "stage", "state", "seconds");
    for stage in &stages {
        let state = format!("{:?}", stage.state).to_lowercase();
        let seconds = stage.seconds.map_or("-".to_string(), |s| format!("{s:.0}"));
        let progress = stage.steps.map_or(String::new(), |(done, total)| format!("step {done} of {total}"));
        println!("{:<22} {state:<8} {seconds:>10}  {progress}", stage.stage);
    }
    Ok(())
}
