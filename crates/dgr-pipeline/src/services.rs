//! The multi-process form of the stages: a coordinator leases a shard stage's shards to worker
//! processes and assembles the set when every shard is done ([`serve_shards`], [`work`]), or
//! brings a training stage's ranks together and watches them ([`serve_training`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::{Context, PipelineError, Result, bail};
use dgr_coordinator::assemble::{place_done_shards, remove_attempts};
use dgr_coordinator::client::Client;
use dgr_coordinator::ledger::{JobSpec, Ledger};
use dgr_coordinator::rendezvous::{JobEnd, Rendezvous};
use dgr_coordinator::server::{Service, ServiceConfig, now, serve};
use dgr_coordinator::train_service::{TrainService, serve_training as serve_train_service};
use dgr_coordinator::worker::{self, ShardWork};
use dgr_core::shards::ShardEntry;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::ranks::{self, Ending};
use crate::retrieve::{RetrieveInputs, RetrieveTask, RetrieveWork, Student};
use crate::teacher::{TeacherInputs, TeacherWork};

/// A stage whose work is cut into shards that workers lease, on one split.
#[derive(Clone, Debug)]
pub enum ShardStage {
    /// Teacher scoring of a split's candidate lists into rank-list shards.
    Teacher { split: String },
    /// Generative retrieval of a split into candidate shards.
    Retrieve(RetrieveTask),
}

impl ShardStage {
    pub fn name(&self) -> &'static str {
        match self {
            ShardStage::Teacher { .. } => "teacher",
            ShardStage::Retrieve(_) => "retrieve",
        }
    }

    pub fn split(&self) -> &str {
        match self {
            ShardStage::Teacher { split } => split,
            ShardStage::Retrieve(task) => &task.split,
        }
    }

    /// The stage, student and split in one name: `retrieve-gr-dev`, `teacher-train`.
    pub fn label(&self) -> String {
        match self {
            ShardStage::Retrieve(task) => format!("retrieve-{}-{}", task.student.name(), task.split),
            stage => format!("{}-{}", stage.name(), stage.split()),
        }
    }

    /// The ledger's file: one per stage, student and split.
    pub fn ledger_path(&self, config: &Config) -> PathBuf {
        let name = match self {
            ShardStage::Retrieve(task) if task.student == Student::Stage2 => format!("retrieve-dgr-{}", task.split),
            stage => format!("{}-{}", stage.name(), stage.split()),
        };
        config.job.coordinator_dir().join(format!("{name}.sqlite"))
    }
}

/// The training stages whose ranks a training coordinator brings together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainStage {
    TrainGen,
    TrainDistill,
}

impl TrainStage {
    pub fn name(self) -> &'static str {
        match self {
            TrainStage::TrainGen => "train-gen",
            TrainStage::TrainDistill => "train-distill",
        }
    }
}

/// The shared secret: `coordinator.token`, else `DGR_TOKEN`.
pub fn token(config: &Config) -> Result<String> {
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
    fn load(config: &Config, stage: &ShardStage) -> Result<Self> {
        Ok(match stage {
            ShardStage::Teacher { split } => StageInputs::Teacher(Box::new(TeacherInputs::load(config, split)?)),
            ShardStage::Retrieve(task) => StageInputs::Retrieve(Box::new(RetrieveInputs::load(config, task)?)),
        })
    }

    fn job(&self, config: &Config, split: &str) -> JobSpec {
        match self {
            StageInputs::Teacher(inputs) => inputs.job(config, split),
            StageInputs::Retrieve(inputs) => inputs.job(config),
        }
    }

    fn manifest_name(&self) -> &'static str {
        match self {
            StageInputs::Teacher(_) => dgr_core::rank_lists::MANIFEST_FILE,
            StageInputs::Retrieve(_) => dgr_core::candidates::CANDIDATES_MANIFEST,
        }
    }

    fn finish(&self, config: &Config, out: &Path, shards: Vec<ShardEntry>) -> Result<()> {
        match self {
            StageInputs::Teacher(inputs) => inputs.finish(out, shards),
            StageInputs::Retrieve(inputs) => inputs.finish(config, out, shards),
        }
    }
}

fn remove_ledger(path: &Path) -> Result<()> {
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
fn assemble(stage: &StageInputs, config: &Config, ledger: &Ledger) -> Result<()> {
    let out = ledger.job().output_dir.clone();
    let entries = place_done_shards(&out, &ledger.done_shards()?)?;
    stage.finish(config, &out, entries)?;
    remove_attempts(&out)?;
    info!(out = %out.display(), "job complete: shards and manifest in place");
    Ok(())
}

/// Serves a shard stage's job until every shard is done, then assembles the set; `overwrite`
/// forgets an earlier job of the stage and split (its ledger and output) first.
pub fn serve_shards(config: &Config, role: &ShardStage, overwrite: bool) -> Result<()> {
    let split = role.split();
    let token = token(config)?;
    let stage = StageInputs::load(config, role)?;
    let job = stage.job(config, split);
    let ledger_file = role.ledger_path(config);
    if overwrite {
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
    let bind = c.bind.clone();
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
        Ok::<(), PipelineError>(())
    })?;
    // Reopen the ledger: the service is gone, and this also proves the state is on disk.
    let ledger = Ledger::open(&role.ledger_path(config), stage.job(config, split), now())?;
    if ledger.is_complete()? { assemble(&stage, config, &ledger) } else { Ok(()) }
}

/// The coordinator of a training job: serves the rendezvous until every rank has left (or,
/// after a failure, left or gone silent); SIGTERM, SIGUSR1 or Ctrl-C stop every rank after the
/// same step with a checkpoint of it.
pub fn serve_training(config: &Config, stage: TrainStage) -> Result<()> {
    let token = token(config)?;
    let fingerprint = ranks::fingerprint(config, stage.name())?;
    // A new key per start: ranks of an earlier world cannot join this one's ring.
    let key = u64::from_str_radix(
        &dgr_core::import::sha256_hex(format!("{}{}", now(), std::process::id()).as_bytes())[..16],
        16,
    )
    .map_err(|e| PipelineError::Invalid(format!("cannot make the job key: {e}")))?;
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
        serve_train_service(listener, service.clone(), shutdown).await?;
        Ok::<(), PipelineError>(())
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

/// Works for the coordinator at `url` on `stage`'s shards until the job is done; `name` is
/// what `dgr status` shows (default: host:pid).
pub fn work(config: &Config, stage: &ShardStage, url: &str, name: Option<String>) -> Result<()> {
    let token = token(config)?;
    let client = Client::new(url, &token, Duration::from_secs_f64(config.worker.retry_seconds))?;
    let work: Arc<dyn ShardWork> = match stage {
        ShardStage::Teacher { split } => Arc::new(TeacherWork::load(config, split)?),
        ShardStage::Retrieve(task) => Arc::new(RetrieveWork::load(config, task)?),
    };
    let name = name.unwrap_or_else(|| format!("{}:{}", ranks::hostname(), std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(worker::run(&client, &name, stage.name(), work))?;
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
