//! The stages of a dgr job and the job run over them. Each stage module holds what the stage
//! reads, the fingerprint that ties its output to those inputs and settings, how it writes its
//! output, and (for the stages cut into shards) its `ShardWork`; the single-process commands,
//! the workers and `dgr run` all go through them. Knows nothing of terminals or command lines:
//! progress goes to a [`dgr_core::progress::Progress`], errors are [`PipelineError`]s.

pub mod bm25;
pub mod config;
pub mod dev_eval;
pub mod error;
pub mod evaluate;
pub mod index;
pub mod job;
pub mod local;
pub mod metrics;
pub mod plots;
pub mod prepare;
pub mod ranks;
pub mod results;
pub mod retrieve;
pub mod services;
pub mod stage1;
pub mod stage2;
pub mod stage_record;
pub mod teacher;
pub mod training;

pub use config::Config;
pub use error::{PipelineError, Result};
