//! The multi-process form of a stage: `dgr coordinator` leases the stage's shards to `dgr
//! worker` processes and assembles the result when every shard is done; `dgr status` asks a
//! running coordinator how far the job is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use dgr_coordinator::CoordinatorError;
use dgr_coordinator::api::TrainStatus;
use dgr_coordinator::assemble::{place_done_shards, remove_attempts};
use dgr_coordinator::client::Client;
use dgr_coordinator::ledger::{JobSpec, Ledger};
use dgr_coordinator::rendezvous::{JobEnd, Rendezvous};
use dgr_coordinator::server::{Service, ServiceConfig, now, serve};
use dgr_coordinator::train_service::{TrainService, serve_training};
use dgr_coordinator::worker::{self, ShardWork};
use dgr_core::shards::ShardEntry;
use figment::Figment;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::commands::ranks::{self, Ending};
use crate::commands::retrieve::{RetrieveInputs, RetrieveWork};
use crate::commands::teacher::{TeacherInputs, TeacherWork};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Teacher scoring of candidate lists into rank-list shards.
    Teacher,
    /// Generative retrieval of a split into candidate shards.
    Retrieve,
    /// The rendezvous and watch of data-parallel training ranks (`--stage` says which).
    Train,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Retrieve => "retrieve",
            Role::Train => "train",
        }
    }
}

/// The training stages whose ranks a `--role train` coordinator brings together.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainStage {
    TrainGen,
    TrainDistill,
}

impl TrainStage {
    fn name(self) -> &'static str {
        match self {
            TrainStage::TrainGen => "train-gen",
            TrainStage::TrainDistill => "train-distill",
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
}

#[derive(ClapArgs)]
pub struct StatusArgs {
    /// The coordinator, e.g. http://127.0.0.1:7878.
    #[arg(long)]
    coordinator: String,
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

/// The shared secret: `coordinator.token`, else `DGR_TOKEN`.
pub(crate) fn token(config: &Config) -> anyhow::Result<String> {
    if !config.coordinator.token.is_empty() {
        return Ok(config.coordinator.token.clone());
    }
    match std::env::var("DGR_TOKEN") {
        Ok(token) if !token.is_empty() => Ok(token),
        _ => bail!(
            "no coordinator token: set DGR_TOKEN (or coordinator.token in the config) to the same secret for the coordinator and its workers"
        ),
    }
}

/// A stage's inputs, as the coordinator needs them: the job, and how to write the set's
/// manifest once every shard is in place.
enum StageInputs {
    Teacher(Box<TeacherInputs>),
    Retrieve(Box<RetrieveInputs>),
}

impl StageInputs {
    fn load(config: &Config, role: Role, split: &str) -> anyhow::Result<Self> {
        Ok(match role {
            Role::Teacher => StageInputs::Teacher(Box::new(TeacherInputs::load(config, split)?)),
            Role::Retrieve => StageInputs::Retrieve(Box::new(RetrieveInputs::load(config, split)?)),
            Role::Train => bail!("training ranks have no shards"),
        })
    }

    fn job(&self, config: &Config, split: &str) -> JobSpec {
        match self {
            StageInputs::Teacher(inputs) => inputs.job(config, split),
            StageInputs::Retrieve(inputs) => inputs.job(config, split),
        }
    }

    fn manifest_name(&self) -> &'static str {
        match self {
            StageInputs::Teacher(_) => dgr_core::rank_lists::MANIFEST_FILE,
            StageInputs::Retrieve(_) => dgr_core::candidates::CANDIDATES_MANIFEST,
        }
    }

    fn finish(&self, config: &Config, split: &str, out: &Path, shards: Vec<ShardEntry>) -> anyhow::Result<()> {
        match self {
            StageInputs::Teacher(inputs) => inputs.finish(out, shards),
            StageInputs::Retrieve(inputs) => inputs.finish(config, split, out, shards),
        }
    }
}

fn ledger_path(config: &Config, role: Role, split: &str) -> PathBuf {
    config.job.coordinator_dir().join(format!("{}-{split}.sqlite", role.name()))
}

fn remove_ledger(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", file.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Moves the accepted outputs into place and writes the set's manifest (last).
fn assemble(stage: &StageInputs, config: &Config, ledger: &Ledger) -> anyhow::Result<()> {
    let out = ledger.job().output_dir.clone();
    let entries = place_done_shards(&out, &ledger.done_shards()?)?;
    stage.finish(config, &ledger.job().split, &out, entries)?;
    remove_attempts(&out)?;
    info!(out = %out.display(), "job complete: shards and manifest in place");
    Ok(())
}

pub fn coordinator(config: &Config, args: &CoordinatorArgs) -> anyhow::Result<()> {
    if args.role == Role::Train {
        let stage = args.stage.context("--role train needs --stage train-gen or --stage train-distill")?;
        return train_coordinator(config, stage);
    }
    let token = token(config)?;
    let stage = StageInputs::load(config, args.role, &args.split)?;
    let job = stage.job(config, &args.split);
    let ledger_file = ledger_path(config, args.role, &args.split);
    if args.overwrite {
        remove_ledger(&ledger_file)?;
        if job.output_dir.exists() {
            std::fs::remove_dir_all(&job.output_dir)
                .with_context(|| format!("cannot remove {}", job.output_dir.display()))?;
        }
    } else if !ledger_file.exists() && job.output_dir.join(stage.manifest_name()).exists() {
        bail!("{} is already complete; pass --overwrite to compute it again", job.output_dir.display());
    }
    std::fs::create_dir_all(job.output_dir.join("attempts"))
        .with_context(|| format!("cannot create {}", job.output_dir.display()))?;
    let ledger = Ledger::open(&ledger_file, job, now())?;
    if ledger.is_complete()? {
        info!("every shard of this job is already done");
        return assemble(&stage, config, &ledger);
    }
    let c = &config.coordinator;
    let service_config = ServiceConfig {
        token,
        lease_seconds: c.lease_seconds,
        heartbeat_seconds: c.heartbeat_seconds,
        max_body_bytes: c.max_body_bytes,
    };
    let status = ledger.status(now())?;
    let service = Service::new(ledger, service_config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let linger = Duration::from_secs_f64(c.linger_seconds);
    let (role, split, bind) = (args.role, args.split.clone(), c.bind.clone());
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&bind).await.with_context(|| format!("cannot listen on {bind}"))?;
        let address = listener.local_addr()?;
        info!(
            url = %format!("http://{address}"),
            role = role.name(),
            split = %split,
            shards = status.shards,
            done = status.done,
            "coordinator listening"
        );
        let mut completion = service.completion();
        let all_done = async move {
            // Dropped at once: the guard `wait_for` returns must not live across an await.
            let _ = completion.wait_for(|done| *done).await.map(|_| ());
        };
        let shutdown = async move {
            tokio::select! {
                _ = all_done => tokio::time::sleep(linger).await,
                _ = tokio::signal::ctrl_c() => warn!("interrupted: the job continues when the coordinator restarts"),
            }
        };
        serve(listener, service, shutdown).await?;
        anyhow::Ok(())
    })?;
    // Reopen the ledger: the service is gone, and this also proves the state is on disk.
    let ledger = Ledger::open(&ledger_path(config, args.role, &args.split), stage.job(config, &args.split), now())?;
    if ledger.is_complete()? { assemble(&stage, config, &ledger) } else { Ok(()) }
}

/// The coordinator of a training job: serves the rendezvous until every rank has left (or,
/// after a failure, left or gone silent); SIGTERM, SIGUSR1 or Ctrl-C stop every rank after the
/// same step with a checkpoint of it.
fn train_coordinator(config: &Config, stage: TrainStage) -> anyhow::Result<()> {
    let token = token(config)?;
    let fingerprint = ranks::fingerprint(config, stage.name())?;
    // A new key per start: ranks of an earlier world cannot join this one's ring.
    let key = u64::from_str_radix(
        &dgr_core::import::sha256_hex(format!("{}{}", now(), std::process::id()).as_bytes())[..16],
        16,
    )?;
    let rendezvous = Rendezvous::new(stage.name(), &fingerprint, config.ranks.clone(), key, now());
    let service = TrainService::new(rendezvous, &token, config.coordinator.max_body_bytes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let bind = config.coordinator.bind.clone();
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&bind).await.with_context(|| format!("cannot listen on {bind}"))?;
        info!(
            url = %format!("http://{}", listener.local_addr()?),
            stage = stage.name(),
            world_size = config.ranks.world_size,
            "training coordinator listening"
        );
        let mut terminate = signal(SignalKind::terminate())?;
        let mut user1 = signal(SignalKind::user_defined1())?;
        let stopper = service.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = user1.recv() => "SIGUSR1",
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                };
                stopper.request_stop(&format!("{name} to the coordinator"));
            }
        });
        let mut ended = service.ended();
        let shutdown = async move {
            let _ = ended.wait_for(Option::is_some).await.map(|_| ());
            // Ranks still polling learn the end before the port closes.
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        serve_training(listener, service.clone(), shutdown).await?;
        anyhow::Ok(())
    })?;
    let end = service.ended().borrow().clone();
    match end {
        Some(JobEnd::Finished) | None => {
            info!("every rank finished");
            Ok(())
        }
        Some(JobEnd::Stopped) => Err(Ending::Stopped { step: None }.into()),
        Some(JobEnd::Failed(reason)) => Err(Ending::Aborted { reason }.into()),
    }
}

pub fn worker(config: &Config, args: &WorkerArgs) -> anyhow::Result<()> {
    let token = token(config)?;
    let client = Client::new(&args.coordinator, &token, Duration::from_secs_f64(config.worker.retry_seconds))?;
    let work: Arc<dyn ShardWork> = match args.role {
        Role::Teacher => Arc::new(TeacherWork::load(config, &args.split)?),
        Role::Retrieve => Arc::new(RetrieveWork::load(config, &args.split)?),
        Role::Train => bail!("training ranks are `dgr train-gen|train-distill --coordinator URL`, not workers"),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}:{}", host.trim(), std::process::id())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(worker::run(&client, &name, args.role.name(), work))?;
    let total = report.compute_seconds + report.coordinator_seconds;
    info!(
        worker_id = report.worker_id,
        shards = report.shards_done,
        rows = report.rows,
        duplicates = report.duplicates,
        lost = report.lost,
        compute_seconds = format!("{:.2}", report.compute_seconds),
        coordinator_seconds = format!("{:.3}", report.coordinator_seconds),
        coordinator_share = format!("{:.3}%", 100.0 * report.coordinator_seconds / total.max(1e-9)),
        "worker finished: the job is done"
    );
    Ok(())
}

pub fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let token = token(config)?;
    let client = Client::new(&args.coordinator, &token, Duration::from_secs(10))?;
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
