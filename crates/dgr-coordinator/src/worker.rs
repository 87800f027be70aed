//! The worker loop: lease a shard, compute it (on a blocking thread, with heartbeats beside
//! it), write it under `<output_dir>/attempts/` with a name unique to the lease, report it, and
//! ask for the next, until the job is done.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::api::{CompleteRequest, CompleteResponse, HeartbeatResponse, LeaseResponse, ShardSpec};
use crate::client::Client;
use crate::error::{CoordinatorError, Result};

/// A stage's computation of one shard.
pub trait ShardWork: Send + Sync + 'static {
    /// The job fingerprint this worker's inputs and settings give; must equal the
    /// coordinator's.
    fn fingerprint(&self) -> &str;

    /// Computes `shard` into the file `path` (written atomically); returns its rows. Should
    /// stop early with an error once `cancel` is set (the lease was lost).
    fn compute(&self, shard: ShardSpec, path: &Path, cancel: &AtomicBool) -> std::result::Result<u64, String>;
}

/// What a worker did, and where its time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerReport {
    pub worker_id: i64,
    pub shards_done: u64,
    /// Shards computed but already done by another lease (discarded).
    pub duplicates: u64,
    /// Shards abandoned because the lease went elsewhere.
    pub lost: u64,
    pub rows: u64,
    pub compute_seconds: f64,
    /// Waiting on lease and completion calls (heartbeats run beside the computation).
    pub coordinator_seconds: f64,
}

/// Name of the file a lease writes: unique per lease, so two workers never write one file.
pub fn attempt_file_name(shard: i64, lease_id: i64) -> String {
    format!("shard-{shard:05}.lease-{lease_id}.arrow")
}

/// Runs until the coordinator says the job is done.
pub async fn run(client: &Client, name: &str, role: &str, work: Arc<dyn ShardWork>) -> Result<WorkerReport> {
    let registered = client.register(name, role).await?;
    let job = registered.job;
    if job.fingerprint != work.fingerprint() {
        return Err(CoordinatorError::Server(format!(
            "this worker's inputs differ from the coordinator's job (same config and job directory?):\n  coordinator: {}\n  worker:      {}",
            job.fingerprint,
            work.fingerprint()
        )));
    }
    let attempts = PathBuf::from(&job.output_dir).join("attempts");
    std::fs::create_dir_all(&attempts)
        .map_err(|e| CoordinatorError::Server(format!("{}: cannot create: {e}", attempts.display())))?;
    let mut report = WorkerReport { worker_id: registered.worker_id, ..WorkerReport::default() };
    info!(worker_id = report.worker_id, stage = %job.stage, split = %job.split, shards = job.shards, "registered");
    let heartbeat_every = Duration::from_secs_f64(job.heartbeat_seconds);
    loop {
        let asked = Instant::now();
        let lease = client.lease(report.worker_id).await?;
        report.coordinator_seconds += asked.elapsed().as_secs_f64();
        let (lease_id, shard) = match lease {
            LeaseResponse::Done => break,
            LeaseResponse::Wait { retry_after_seconds } => {
                tokio::time::sleep(Duration::from_secs_f64(retry_after_seconds)).await;
                continue;
            }
            LeaseResponse::Leased { lease_id, shard } => (lease_id, shard),
        };
        info!(lease_id, shard = shard.id, first = shard.first, count = shard.count, "computing shard");
        let file = attempt_file_name(shard.id, lease_id);
        let path = attempts.join(&file);
        let cancel = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut computation = {
            let (work, path, cancel) = (work.clone(), path.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || work.compute(shard, &path, &cancel))
        };
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
        let outcome = loop {
            tokio::select! {
                result = &mut computation => break result,
                _ = ticker.tick() => match client.heartbeat(lease_id).await {
                    Ok(HeartbeatResponse::Renewed) => {}
                    Ok(HeartbeatResponse::Lost) => {
                        warn!(lease_id, shard = shard.id, "lease lost: stopping this shard");
                        cancel.store(true, Ordering::Relaxed);
                    }
                    Err(e) => warn!(lease_id, error = %e, "heartbeat failed"),
                },
            }
        };
        report.compute_seconds += started.elapsed().as_secs_f64();
        let rows = match outcome {
            Ok(Ok(rows)) => rows,
            Ok(Err(_)) if cancel.load(Ordering::Relaxed) => {
                report.lost += 1;
                remove_quietly(&path);
                continue;
            }
            Ok(Err(reason)) => return Err(CoordinatorError::Server(format!("shard {}: {reason}", shard.id))),
            Err(e) => return Err(CoordinatorError::Server(format!("shard {}: computation failed: {e}", shard.id))),
        };
        let sha256 = dgr_core::import::sha256_file(&path)
            .map_err(|e| CoordinatorError::Server(format!("shard {}: {e}", shard.id)))?
            .1;
        let completing = Instant::now();
        let answer = client.complete(&CompleteRequest { lease_id, shard: shard.id, file, sha256, rows }).await?;
        report.coordinator_seconds += completing.elapsed().as_secs_f64();
        let job_done = match answer {
            CompleteResponse::Accepted { job_done } => {
                report.shards_done += 1;
                report.rows += rows;
                info!(
                    lease_id,
                    shard = shard.id,
                    rows,
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "shard done"
                );
                job_done
            }
            CompleteResponse::Duplicate { job_done } => {
                report.duplicates += 1;
                remove_quietly(&path);
                info!(lease_id, shard = shard.id, "shard was done by another worker: output discarded");
                job_done
            }
        };
        if job_done {
            break;
        }
    }
    Ok(report)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove a discarded output");
    }
}
