//! dgr-trainer: what the student is trained on, and how.
//!
//! - [`pairs`]: stage-1 training pairs of the MINDER-style generative retriever (method §1):
//!   for each (query, relevant passage), identifier targets in three views (title, body span,
//!   pseudo-query) behind view prompts, plus unsupervised pairs built from the corpus itself;
//! - [`pair_space`]: every pair of a stage-1 run numbered, each drawn when a step asks for it;
//! - [`engine`]: the loop both stages run on (data order, accumulation, clipping, AdamW with
//!   warmup and linear decay, step log, checkpoints, exact resume);
//! - [`checkpoint`]: checkpoint directories, their manifest and checks;
//! - [`stage1`]: the generation loss over stage-1 pairs;
//! - [`distill`]: stage 2 (DGR): sampling of §5 and the student's passage scores of §4;
//! - [`rank_loss`]: the distilled RankNet and its variants;
//! - [`loss_scale`]: their margins and temperatures measured on the scores (`"auto"`);
//! - [`clip`]: gradient clipping by the global norm;
//! - [`data_parallel`]: gradients summed over data-parallel ranks.

pub mod checkpoint;
pub mod clip;
pub mod data_parallel;
pub mod distill;
pub mod engine;
pub mod loss_scale;
pub mod pair_space;
pub mod pairs;
pub mod rank_loss;
pub mod stage1;
