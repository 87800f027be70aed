//! dgr-core: the data layer of dgr.
//!
//! Records ([`Passage`], [`Query`]), their Arrow IPC files with versioned schemas
//! ([`arrow_file`]), candidate and rank-list shard sets ([`candidates`], [`rank_lists`],
//! [`shards`]), TREC qrels and runs ([`trec`]), dataset importers ([`import`]),
//! atomic writes ([`atomic`]) and layered configuration ([`config`]).
//!
//! It knows nothing of models, tensors, processes or the network.
//!
//! ```no_run
//! use dgr_core::{arrow_file::read_records, Passage};
//! let corpus: Vec<Passage> = read_records(std::path::Path::new("data/corpus.arrow"))?;
//! # Ok::<(), dgr_core::Error>(())
//! ```

pub mod arrow_file;
pub mod atomic;
pub mod candidates;
pub mod config;
pub mod error;
pub mod import;
pub mod progress;
pub mod rank_lists;
pub mod records;
pub mod shards;
pub mod trec;
pub mod views;

pub use error::{Error, Position, Result};
pub use records::{Passage, Query};
