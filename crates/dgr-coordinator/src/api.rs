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

// Data-parallel training (`dgr coordinator --role train`): ranks join, learn their place in
// the world, report their progress by heartbeats and leave with their outcome.
//
// | method, path | body | answer |
// |---|---|---|
// | `POST /v1/train/join` | [`JoinRequest`] | [`JoinResponse`] |
// | `POST /v1/train/world` | [`WorldRequest`] | [`WorldResponse`] |
// | `POST /v1/train/heartbeat` | [`RankHeartbeat`] | [`RankInstruction`] |
// | `POST /v1/train/leave` | [`LeaveRequest`] | `{}` |
// | `GET /v1/train/status` | — | [`TrainStatus`] |

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Shown by `dgr status` and in log lines that name the rank (host and process id, say).
    pub name: String,
    /// The node's index in the job and the process's index on its node; ranks are numbered in
    /// this order.
    pub node: u32,
    pub local_rank: u32,
    /// `host:port` where this rank accepts its ring neighbour.
    pub ring_address: String,
    /// The world size the rank was launched for.
    pub world_size: usize,
    /// The stage, its resolved settings and the program (see `dgr` docs/operations.md): ranks
    /// of one job must agree on it.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub member_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldRequest {
    pub member_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum WorldResponse {
    /// Not every rank has joined yet.
    Wait { joined: usize, world_size: usize },
    /// The world: this rank's number, every rank's ring address in rank order and the key of
    /// the ring's handshake (GPU ranks pass NCCL's unique id over the ring).
    Ready { rank: usize, world_size: usize, peers: Vec<String>, key: u64 },
}

/// What a rank is doing; the coordinator names a rank that computes while the others wait in
/// a collective for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Compute,
    Collective,
    /// Work outside the step (checkpoints, dev evaluations) that others may wait for.
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankHeartbeat {
    pub member_id: u64,
    /// Steps done.
    pub step: u64,
    pub phase: Phase,
    /// Seconds of the last step and of its all-reduce.
    pub step_seconds: Option<f64>,
    pub all_reduce_seconds: Option<f64>,
    /// Bytes per second of the preflight all-reduce (the algorithm's bandwidth).
    pub all_reduce_bytes_per_second: Option<f64>,
    /// The training loss of the last step.
    #[serde(default)]
    pub loss: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum RankInstruction {
    Continue,
    /// Finish the current step, write its checkpoint and exit (preemption).
    Stop {
        reason: String,
    },
    /// Give up now: another rank failed or hangs.
    Abort {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Finished,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    pub member_id: u64,
    pub outcome: Outcome,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStatus {
    pub stage: String,
    pub world_size: usize,
    /// `forming`, `running`, `stopping`, `failed`, `finished` or `stopped`.
    pub state: String,
    /// Why it is stopping or failed.
    pub reason: Option<String>,
    pub elapsed_seconds: f64,
    pub ranks: Vec<RankStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankStatus {
    /// Assigned when the world is complete.
    pub rank: Option<usize>,
    pub name: String,
    pub node: u32,
    pub local_rank: u32,
    pub step: u64,
    pub phase: Phase,
    pub seconds_in_phase: f64,
    pub seconds_since_seen: f64,
    pub step_seconds: Option<f64>,
    pub all_reduce_seconds: Option<f64>,
    pub all_reduce_bytes_per_second: Option<f64>,
    /// The training loss of the last step.
    #[serde(default)]
    pub loss: Option<f64>,
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Empty {}
