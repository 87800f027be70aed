//! dgr-trainer: what the student is trained on, and (coming) how.
//!
//! - [`pairs`]: stage-1 training pairs of the MINDER-style generative retriever (method §1):
//!   for each (query, relevant passage), identifier targets in three views (title, body span,
//!   pseudo-query) behind view prompts, plus unsupervised pairs built from the corpus itself;
//! - [`stage1`]: the stage-1 training loop (generation loss, AdamW, warmup + linear decay,
//!   a JSON line per step, HF-layout weight saves);
//! - [`clip`]: gradient clipping by the global norm.

pub mod clip;
pub mod pairs;
pub mod stage1;
