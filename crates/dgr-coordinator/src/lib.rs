//! dgr-coordinator: the job service of a multi-process stage.
//!
//! A job is a list of shards (query ranges) of one stage. Workers register, lease a shard
//! (a lease lives `lease_seconds` unless renewed by heartbeats), and complete it with the
//! output file's checksum. A lease that is not renewed expires and its shard goes to the next
//! worker that asks; a shard is done exactly once, later completions are discarded.
//!
//! - [`ledger`]: the job's state in an embedded SQLite database in the job directory, so a
//!   restarted coordinator continues the job;
//! - [`api`]: the HTTP/JSON messages; [`server`]: the axum service (shared token, body limit,
//!   4xx with a reason for bad requests); [`client`]: the same API for workers and `dgr status`,
//!   retrying with backoff while the coordinator is unreachable; [`worker`]: the worker loop
//!   around a stage's [`worker::ShardWork`];
//! - [`rendezvous`] and [`train_service`]: the same service for data-parallel training ranks
//!   (`--role train`): they join, learn the world, report their steps, and are told to stop or
//!   abort when a rank is preempted, dies or hangs.
//!
//! It knows nothing of models or of what a shard holds: stages plug in through `ShardWork`
//! and finish the set themselves once every shard is done.

pub mod api;
pub mod assemble;
pub mod client;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod rendezvous;
pub mod server;
pub mod train_service;
pub mod worker;

pub use error::{CoordinatorError, Result};
