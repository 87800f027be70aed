//! dgr-teacher: the teacher stage of DGR (method §3).
//!
//! - [`candidates`]: the candidate lists to score, from generative retrieval's candidate shards
//!   or a BM25 run, with the passages' texts and the qrels labels;
//! - [`teacher`]: a bi-encoder or cross-encoder scoring (query, passage) pairs in
//!   length-sorted batches;
//! - [`shards`]: one shard of rank lists (a range of queries) scored and written, and whole sets;
//! - [`import`]: teacher scores computed elsewhere (the reference DGR JSONL, or `qid pid score`
//!   TSV) turned into the same rank-list shards.
//!
//! The output format, `dgr.rank-list`, is defined in `dgr_core::rank_lists`.

pub mod candidates;
pub mod error;
pub mod import;
pub mod shards;
pub mod teacher;

pub use error::{Result, TeacherError};
