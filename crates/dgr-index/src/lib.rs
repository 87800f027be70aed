//! dgr-index: the FM-index over the tokenised corpus that constrains and scores generative
//! retrieval (method §2).
//!
//! - [`fm`]: an FM-index over `u16` symbols built on the reversed text, so that a pattern is
//!   extended to the right one symbol at a time and the symbols that may follow it are one
//!   wavelet-tree range listing;
//! - [`corpus`]: the index of a corpus in token ids — passages in order, [`corpus::Prefix`]
//!   states for beam search, count / locate (passage and offset) / next tokens, N;
//! - [`evidence`]: key weights and passage scores from the keys a query's decoding found;
//! - [`layout`]: how a passage is written for indexing (`title @@ body || pq @@ ...`);
//! - [`store`]: the index directory on disk (`index.bin` + `index.json` manifest).
//!
//! Knows nothing of models or tokenizers: callers pass token ids.

pub mod corpus;
pub mod error;
pub mod evidence;
pub mod fm;
pub mod layout;
pub mod store;

pub use corpus::{CorpusIndex, IndexBuilder, Occurrence, Prefix};
pub use error::IndexError;
