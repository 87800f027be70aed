//! dgr-model: the neural models of dgr on Burn.
//!
//! - [`bert`]: a BERT-family encoder shaped like HF `BertModel`;
//! - [`heads`]: the teachers, a bi-encoder (mean pooling + L2 norm) and a cross-encoder
//!   (`BertForSequenceClassification`, score = first logit);
//! - [`weights`]: HF safetensors loading with clear errors for missing or mis-shaped tensors;
//! - [`tokenizer`]: HF `tokenizer.json` tokenizers and padded batches.
//!
//! CPU (Burn's `flex` backend) is the default; callers pass the [`burn::tensor::Device`].
//! This crate knows nothing of files beyond model directories, nor of processes or the network.

pub mod bert;
pub mod error;
pub mod heads;
pub mod seq2seq;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, Result};
