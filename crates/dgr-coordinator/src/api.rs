//! The coordinator's HTTP/JSON API, version 1. Every request carries
//! `Authorization: Bearer <token>`; errors answer `{"error": "<reason>"}` with a 4xx status.
//!
//! | method, path | body | answer |
//! |---|---|---|
//! | `POST /v1/register` | [`RegisterRequest`] | [`RegisterResponse`] |
//! | `POST /v1/lease` | [`LeaseRequest`] | [`LeaseResponse`] |
//! | `POST /v1/heartbeat` | [`HeartbeatRequest`] | [`HeartbeatResponse`] |
//! | `POST /v1/complete` | [`CompleteRequest`] | [`CompleteResponse`] |
//! | `GET /v1/status` | — | [`StatusResponse`] |

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Free text shown by `dgr status` (host and process id, say).
    pub name: String,
    /// The stage the worker computes; must match the job's.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub worker_id: i64,
    pub job: JobInfo,
}

/// What a worker needs to know about the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub stage: String,
    pub split: String,
    pub shards: u64,
    pub lease_seconds: f64,
    pub heartbeat_seconds: f64,
    /// Directory (on storage the workers share) that completed shards are written into; a
    /// worker writes to its `attempts/` subdirectory.
    pub output_dir: String,
    /// The job's inputs and settings as the coordinator sees them; a worker whose own differ
    /// (another config, changed inputs) refuses to work.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub worker_id: i64,
}

/// A shard: queries `first .. first + count` of the stage's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub id: i64,
    pub first: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum LeaseResponse {
    /// Work on this shard, renewing the lease by heartbeats.
    Leased { lease_id: i64, shard: ShardSpec },
    /// Every open shard is leased to someone else: ask again later (a lease may expire).
    Wait { retry_after_seconds: f64 },
    /// Every shard is done.
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum HeartbeatResponse {
    /// The lease runs for another `lease_seconds`.
    Renewed,
    /// The shard went to another worker or is done: stop working on it.
    Lost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_id: i64,
    pub shard: i64,
    /// File name inside `<output_dir>/attempts/`.
    pub file: String,
    pub sha256: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CompleteResponse {
    /// This output is the shard's result. `job_done`: it was the last open shard, so the
    /// worker can stop without asking for more.
    Accepted { job_done: bool },
    /// The shard was already done by another lease: this output is discarded (delete it).
    Duplicate { job_done: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub stage: String,
    pub split: String,
    pub shards: u64,
    pub done: u64,
    /// Shards under a live lease.
    pub leased: u64,
    /// Shards nobody works on (never leased, or their lease expired).
    pub pending: u64,
    /// Leases granted since the job began (above `shards` when shards were re-run).
    pub leases_granted: u64,
    pub elapsed_seconds: f64,
    /// From the rate of the last completions; absent before any.
    pub eta_seconds: Option<f64>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: i64,
    pub name: String,
    pub shards_done: u64,
    /// Shards per minute since the worker registered.
    pub shards_per_minute: f64,
    pub seconds_since_seen: f64,
    /// The shard it holds a live lease on.
    pub shard: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
