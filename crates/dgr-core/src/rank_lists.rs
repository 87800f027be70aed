//! Teacher rank lists, one row per query (`dgr.rank-list`): the candidate passages in candidate
//! order with their candidate (stage-1 or BM25) scores, the teacher's scores and ranks, and the
//! qrels labels. Stage 2 samples its negatives from these and orders them by the teacher.
//!
//! A set of rank-list shards lives in `<job>/rank_lists/<split>/` beside a `manifest.json`
//! ([`crate::shards::ShardManifest`], format [`SET_FORMAT`]).

use std::path::Path;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, UInt32Type};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};

use crate::arrow_file::{
    ArrowRecord, BatchColumns, list_of, primitive_list_column, string_list_column, string_list_type,
};
use crate::error::{Error, Position, Result};

/// `format` of a rank-list set's `manifest.json`.
pub const SET_FORMAT: &str = "dgr.rank-list-shards";
/// Version of that manifest.
pub const SET_VERSION: u32 = 1;
/// Name of the manifest inside a set's directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Schema metadata keys a rank-list shard carries (beside format, version and writer).
pub mod meta {
    pub const TEACHER: &str = "dgr.teacher";
    pub const TEACHER_SHA256: &str = "dgr.teacher_sha256";
    pub const CANDIDATE_SOURCE: &str = "dgr.candidate_source";
    pub const SPLIT: &str = "dgr.split";
    pub const SHARD: &str = "dgr.shard";
    /// Index of the shard's first query in the candidate set.
    pub const FIRST_QUERY: &str = "dgr.first_query";
    pub const QUERIES: &str = "dgr.queries";
    /// Seconds since the Unix epoch when the shard was written.
    pub const CREATED: &str = "dgr.created_unix";
}

/// One query's candidates as the teacher ranks them.
#[derive(Debug, Clone, PartialEq)]
pub struct RankList {
    pub query_id: String,
    /// In candidate order (best candidate score first).
    pub passage_ids: Vec<String>,
    pub candidate_scores: Vec<f64>,
    pub teacher_scores: Vec<f64>,
    /// Per passage, its position in the teacher's order (0 = the teacher's best).
    pub teacher_ranks: Vec<u32>,
    /// Per passage, the qrels relevance (0 where unjudged).
    pub labels: Vec<i32>,
}

impl RankList {
    /// A rank list with the teacher's ranks derived from its scores: highest score first, ties
    /// in candidate order.
    pub fn new(
        query_id: String,
        passage_ids: Vec<String>,
        candidate_scores: Vec<f64>,
        teacher_scores: Vec<f64>,
        labels: Vec<i32>,
    ) -> Self {
        let teacher_ranks = ranks_of(&teacher_scores);
        RankList { query_id, passage_ids, candidate_scores, teacher_scores, teacher_ranks, labels }
    }

    /// Passage indices in the teacher's order.
    pub fn teacher_order(&self) -> Vec<usize> {
        let mut order = vec![0; self.teacher_ranks.len()];
        for (passage, &rank) in self.teacher_ranks.iter().enumerate() {
            order[rank as usize] = passage;
        }
        order
    }
}

/// Rank of each score, highest first, ties broken by position.
pub fn ranks_of(scores: &[f64]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut ranks = vec![0u32; scores.len()];
    for (rank, &passage) in order.iter().enumerate() {
        ranks[passage] = rank as u32;
    }
    ranks
}

impl ArrowRecord for RankList {
    const FORMAT: &'static str = "dgr.rank-list";
    const VERSION: u32 = 1;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("query_id", DataType::Utf8, false),
            Field::new("passage_ids", string_list_type(), false),
            Field::new("candidate_scores", list_of(DataType::Float64), false),
            Field::new("teacher_scores", list_of(DataType::Float64), false),
            Field::new("teacher_ranks", list_of(DataType::UInt32), false),
            Field::new("labels", list_of(DataType::Int32), false),
        ]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.query_id))),
            string_list_column(rows.iter().map(|r| r.passage_ids.as_slice())),
            primitive_list_column::<Float64Type>(rows.iter().map(|r| r.candidate_scores.clone()), DataType::Float64),
            primitive_list_column::<Float64Type>(rows.iter().map(|r| r.teacher_scores.clone()), DataType::Float64),
            primitive_list_column::<UInt32Type>(rows.iter().map(|r| r.teacher_ranks.clone()), DataType::UInt32),
            primitive_list_column::<Int32Type>(rows.iter().map(|r| r.labels.clone()), DataType::Int32),
        ]
    }

    fn from_batch(batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Self>> {
        let cols = BatchColumns { batch, path, first_row };
        let query_ids = cols.strings("query_id")?;
        let passage_ids = cols.string_lists("passage_ids")?;
        let candidate_scores = cols.primitive_lists::<Float64Type>("candidate_scores")?;
        let teacher_scores = cols.primitive_lists::<Float64Type>("teacher_scores")?;
        let teacher_ranks = cols.primitive_lists::<UInt32Type>("teacher_ranks")?;
        let labels = cols.primitive_lists::<Int32Type>("labels")?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let bad = |field: &str, detail: String| {
                Error::input(path, Position::Row(first_row + i as u64), field, "is inconsistent", detail)
            };
            let passages = passage_ids.get(i);
            let n = passages.len();
            for (name, len) in [
                ("candidate_scores", candidate_scores[i].len()),
                ("teacher_scores", teacher_scores[i].len()),
                ("teacher_ranks", teacher_ranks[i].len()),
                ("labels", labels[i].len()),
            ] {
                if len != n {
                    return Err(bad(name, format!("{len} entries for {n} passages")));
                }
            }
            let mut seen = vec![false; n];
            for &rank in &teacher_ranks[i] {
                match seen.get_mut(rank as usize) {
                    Some(slot) if !*slot => *slot = true,
                    _ => return Err(bad("teacher_ranks", format!("not a permutation of 0..{n}"))),
                }
            }
            rows.push(RankList {
                query_id: query_ids.value(i).to_string(),
                passage_ids: passages,
                candidate_scores: candidate_scores[i].clone(),
                teacher_scores: teacher_scores[i].clone(),
                teacher_ranks: teacher_ranks[i].clone(),
                labels: labels[i].clone(),
            });
        }
        Ok(rows)
    }
}
