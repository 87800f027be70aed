//! dgr-model: the neural models of dgr on Burn.
//!
//! - [`bert`]: a BERT-family encoder shaped like HF `BertModel`;
//! - [`heads`]: the teachers, a bi-encoder (mean pooling + L2 norm) and a cross-encoder
//!   (`BertForSequenceClassification`, score = first logit);
//! - [`seq2seq`]: the student, BART-compatible, and the [`seq2seq::EncoderDecoder`] trait with
//!   the generation loss and teacher-forced key scores ([`key_trie`] lays keys out as a token
//!   tree so shared prefixes are decoded once); [`bert2bert`]: the BERT2BERT student,
//!   warm-started from a pretrained BERT; [`student`]: either of the two, as a model
//!   directory holds it;
//! - [`beam`]: beam search constrained by the corpus index, keeping keys; [`retrieve`]: keys of
//!   all views plus query spans, ranked into passages by `dgr_index::evidence`;
//! - [`weights`]: HF safetensors loading with clear errors for missing or mis-shaped tensors;
//! - [`tokenizer`]: HF `tokenizer.json` tokenizers and padded batches;
//! - [`allocator`]: keeps freed CPU tensor buffers in the process (call at start-up).
//!
//! CPU (Burn's `flex` backend) is the default; callers pass the [`burn::tensor::Device`]
//! ([`device::select`] probes CUDA, available with the `cuda` feature).
//! This crate knows nothing of files beyond model directories, nor of processes or the network.

pub mod allocator;
pub mod beam;
pub mod bert;
pub mod bert2bert;
pub mod device;
pub mod error;
pub mod heads;
mod init;
pub mod key_trie;
pub mod retrieve;
pub mod seq2seq;
pub mod student;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, Result};
