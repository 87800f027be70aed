//! The multi-process form of a stage: `dgr coordinator` leases the stage's shards to `dgr
//! worker` processes and assembles the result when every shard is done; `dgr status` asks a
//! running coordinator how far the job is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use dgr_coordinator::assemble::{place_done_shards, remove_attempts};
use dgr_coordinator::client::Client;
use dgr_coordinator::ledger::{JobSpec, Ledger};
use dgr_coordinator::server::{Service, ServiceConfig, now, serve};
use dgr_coordinator::worker::{self, ShardWork};
use dgr_core::shards::ShardEntry;
use figment::Figment;
use tracing::{info, warn};

use crate::commands::retrieve::{RetrieveInputs, RetrieveWork};
use crate::commands::teacher::{TeacherInputs, TeacherWork};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Teacher scoring of candidate lists into rank-list shards.
    Teacher,
    /// Generative retrieval of a split into candidate shards.
    Retrieve,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Retrieve => "retrieve",
        }
    }
}

#[derive(ClapArgs)]
pub struct CoordinatorArgs {
    /// The stage whose shards are leased.
    #[arg(long, value_enum)]
    role: Role,
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
        match &self.bind {
            Some(bind) => Figment::new().merge(("coordinator.bind", bind)),
            None => Figment::new(),
        }
    }
}

/// The shared secret: `coordinator.token`, else `DGR_TOKEN`.
fn token(config: &Config) -> anyhow::Result<String> {
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

pub fn worker(config: &Config, args: &WorkerArgs) -> anyhow::Result<()> {
    let token = token(config)?;
    let client = Client::new(&args.coordinator, &token, Duration::from_secs_f64(config.worker.retry_seconds))?;
    let work: Arc<dyn ShardWork> = match args.role {
        Role::Teacher => Arc::new(TeacherWork::load(config, &args.split)?),
        Role::Retrieve => Arc::new(RetrieveWork::load(config, &args.split)?),
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
    let status = runtime.block_on(client.status())?;
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
