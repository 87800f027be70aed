//! The teacher: a ranking model that scores (query, passage) pairs. Only its order is used by
//! the distilled RankNet loss; the scores are kept for score-based losses.
//!
//! Sequences are tokenised first, then sorted by length and cut into batches, so a batch pads
//! to nearly its own length; results go back to the callers' order. The bi-encoder embeds every
//! distinct text once (a passage shared by several queries of a shard is embedded once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use dgr_core::import::sha256_file;
use dgr_model::error::host_values;
use dgr_model::heads::{BiEncoder, CrossEncoder};
use dgr_model::tokenizer::{Encoded, Overlong, TextTokenizer, batch};

use crate::error::{Result, TeacherError};

/// The teacher stage (`[teacher]`, `dgr teacher`, method §3): the model, how to feed it, and
/// which candidates it scores into rank-list shards.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherConfig {
    /// HF directory with config.json, model.safetensors and tokenizer.json.
    pub model: PathBuf,
    pub kind: TeacherKind,
    /// Prepended to queries / passages before tokenising (E5: `query: ` / `passage: `).
    pub query_prefix: String,
    pub passage_prefix: String,
    /// Token limit per sequence (per pair for the cross-encoder), special tokens included.
    pub max_tokens: usize,
    /// Over-long sequences: `truncate` or `error`.
    pub overlong: Overlong,
    /// Sequences per forward pass (sorted by length, so padding stays small).
    pub batch_size: usize,
    /// Where candidates come from: `gr` (`<job>/candidates/<split>/`, from `dgr retrieve`) or
    /// `bm25` (`<job>/runs/bm25-<split>.trec`).
    pub candidates: CandidateSource,
    /// Candidates scored per query (the best ones by candidate score).
    pub depth: usize,
    /// Queries per rank-list shard, and per coordinator lease.
    pub shard_queries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherKind {
    /// Cosine of mean-pooled, L2-normalised embeddings.
    BiEncoder,
    /// First logit of a classification head over `[CLS] query [SEP] passage [SEP]`.
    CrossEncoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateSource {
    Gr,
    Bm25,
}

impl TeacherConfig {
    /// The model directory and kind, for provenance.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            TeacherKind::BiEncoder => "bi-encoder",
            TeacherKind::CrossEncoder => "cross-encoder",
        };
        format!("{} ({kind})", self.model.display())
    }

    /// SHA-256 of the model's weights file.
    pub fn weights_sha256(&self) -> Result<String> {
        Ok(sha256_file(&self.model.join("model.safetensors"))?.1)
    }
}

enum Scorer {
    Bi(Box<BiEncoder>),
    Cross(Box<CrossEncoder>),
}

pub struct Teacher {
    scorer: Scorer,
    tokenizer: TextTokenizer,
    spec: TeacherConfig,
    device: Device,
    weights_sha256: String,
}

/// One query and the passages to score for it.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    pub query: &'a str,
    pub passages: &'a [String],
}

impl Teacher {
    pub fn load(spec: TeacherConfig, device: Device) -> Result<Self> {
        let weights_sha256 = spec.weights_sha256()?;
        let scorer = match spec.kind {
            TeacherKind::BiEncoder => Scorer::Bi(Box::new(BiEncoder::load(&spec.model, &device)?.0)),
            TeacherKind::CrossEncoder => Scorer::Cross(Box::new(CrossEncoder::load(&spec.model, &device)?.0)),
        };
        let tokenizer =
            TextTokenizer::from_file(&spec.model.join("tokenizer.json"), spec.max_tokens)?.with_overlong(spec.overlong);
        Ok(Teacher { scorer, tokenizer, spec, device, weights_sha256 })
    }

    pub fn spec(&self) -> &TeacherConfig {
        &self.spec
    }

    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    /// Scores every query's passages; `cancel` is checked between batches.
    pub fn score(&self, lists: &[Candidates<'_>], cancel: &AtomicBool) -> Result<Vec<Vec<f64>>> {
        match &self.scorer {
            Scorer::Bi(model) => self.score_bi(model, lists, cancel),
            Scorer::Cross(model) => self.score_cross(model, lists, cancel),
        }
    }

    fn score_bi(&self, model: &BiEncoder, lists: &[Candidates<'_>], cancel: &AtomicBool) -> Result<Vec<Vec<f64>>> {
        // Distinct texts, queries and passages apart (their prefixes differ).
        let mut texts: Vec<String> = Vec::new();
        let mut index: HashMap<(bool, &str), usize> = HashMap::new();
        let mut slots = Vec::with_capacity(lists.len());
        for list in lists {
            let q = *index.entry((true, list.query)).or_insert_with(|| {
                texts.push(format!("{}{}", self.spec.query_prefix, list.query));
                texts.len() - 1
            });
            let ps: Vec<usize> = list
                .passages
                .iter()
                .map(|p| {
                    *index.entry((false, p.as_str())).or_insert_with(|| {
                        texts.push(format!("{}{}", self.spec.passage_prefix, p));
                        texts.len() - 1
                    })
                })
                .collect();
            slots.push((q, ps));
        }
        let encoded = texts.iter().map(|t| self.tokenizer.encode(t)).collect::<dgr_model::Result<Vec<_>>>()?;
        let embeddings = in_length_order(encoded, self.spec.batch_size, cancel, |chunk| {
            let vectors = model.embed(&batch(chunk, &self.device));
            let [rows, hidden] = vectors.dims();
            let values = host_values(vectors.into_data())?;
            Ok((0..rows).map(|r| values[r * hidden..(r + 1) * hidden].to_vec()).collect())
        })?;
        Ok(slots.iter().map(|(q, ps)| ps.iter().map(|&p| dot(&embeddings[*q], &embeddings[p])).collect()).collect())
    }

    fn score_cross(
        &self,
        model: &CrossEncoder,
        lists: &[Candidates<'_>],
        cancel: &AtomicBool,
    ) -> Result<Vec<Vec<f64>>> {
        let mut encoded = Vec::new();
        for list in lists {
            let query = format!("{}{}", self.spec.query_prefix, list.query);
            for passage in list.passages {
                encoded.push(self.tokenizer.encode_pair(&query, &format!("{}{}", self.spec.passage_prefix, passage))?);
            }
        }
        let scores = in_length_order(encoded, self.spec.batch_size, cancel, |chunk| {
            let values = host_values(model.score(&batch(chunk, &self.device)).into_data())?;
            Ok(values.into_iter().map(f64::from).collect())
        })?;
        let mut scores = scores.into_iter();
        Ok(lists.iter().map(|list| scores.by_ref().take(list.passages.len()).collect()).collect())
    }
}

/// Runs `f` over `sequences` sorted by length in chunks of `batch_size`; results in input order.
fn in_length_order<T>(
    sequences: Vec<Encoded>,
    batch_size: usize,
    cancel: &AtomicBool,
    mut f: impl FnMut(&[Encoded]) -> dgr_model::Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| sequences[i].ids.len());
    let mut sorted: Vec<Option<Encoded>> = sequences.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = (0..order.len()).map(|_| None).collect();
    for chunk in order.chunks(batch_size.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Err(TeacherError::Cancelled);
        }
        let batch: Vec<Encoded> = chunk.iter().filter_map(|&i| sorted[i].take()).collect();
        for (&i, value) in chunk.iter().zip(f(&batch)?) {
            results[i] = Some(value);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}
