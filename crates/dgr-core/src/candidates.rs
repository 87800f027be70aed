//! Candidate passages of generative retrieval, one row per query (`dgr.candidates`): the ranked
//! passages with the generator's scores, and the keys behind them — their token ids, where they
//! came from, the student's log-probability, the corpus count and the key weight — so that the
//! teacher and the stage-2 trainer can work from the same evidence.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder, UInt32Builder};
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};

use crate::arrow_file::{
    ArrowRecord, BatchColumns, as_list, list_item, list_of, primitive_list_column, primitive_lists, string_list_column,
    string_list_type,
};
use crate::error::{Error, Position, Result};

/// `format` of a candidate set's manifest ([`crate::shards::ShardManifest`]).
pub const CANDIDATES_FORMAT: &str = "dgr.candidate-shards";
pub const CANDIDATES_VERSION: u32 = 1;
/// Name of that manifest inside `<job>/candidates/<split>/`.
pub const CANDIDATES_MANIFEST: &str = "candidates.json";

/// A key behind a query's candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateKey {
    /// Token ids of the student's tokenizer, as matched in the index (markers included).
    pub tokens: Vec<u32>,
    /// `title`, `body`, `pseudo-query`, `query-span` or `unigram`.
    pub source: String,
    /// The student's log P(key | query).
    pub log_prob: f64,
    /// Occurrences in the corpus (at passage starts for titles).
    pub count: u64,
    pub weight: f64,
}

/// One query's candidates, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryCandidates {
    pub query_id: String,
    pub passage_ids: Vec<String>,
    pub scores: Vec<f64>,
    /// Per passage, the indices into `keys` of the keys that counted for it, in the order they
    /// were accepted.
    pub passage_keys: Vec<Vec<u32>>,
    /// Per passage, what each of those keys added to its score (the key weight times the
    /// coverage factor there); the rest of the score is unigram scores.
    pub passage_key_scores: Vec<Vec<f64>>,
    pub keys: Vec<CandidateKey>,
}

impl ArrowRecord for QueryCandidates {
    const FORMAT: &'static str = "dgr.candidates";
    const VERSION: u32 = 1;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("query_id", DataType::Utf8, false),
            Field::new("passage_ids", string_list_type(), false),
            Field::new("scores", list_of(DataType::Float64), false),
            Field::new("passage_keys", list_of(list_of(DataType::UInt32)), false),
            Field::new("passage_key_scores", list_of(list_of(DataType::Float64)), false),
            Field::new("key_tokens", list_of(list_of(DataType::UInt32)), false),
            Field::new("key_sources", string_list_type(), false),
            Field::new("key_log_probs", list_of(DataType::Float64), false),
            Field::new("key_counts", list_of(DataType::UInt64), false),
            Field::new("key_weights", list_of(DataType::Float64), false),
        ]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        let sources: Vec<Vec<String>> =
            rows.iter().map(|r| r.keys.iter().map(|k| k.source.clone()).collect()).collect();
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.query_id))),
            string_list_column(rows.iter().map(|r| r.passage_ids.as_slice())),
            primitive_list_column::<Float64Type>(rows.iter().map(|r| r.scores.clone()), DataType::Float64),
            nested_lists(rows.iter().map(|r| r.passage_keys.clone()), UInt32Builder::new, DataType::UInt32),
            nested_lists(rows.iter().map(|r| r.passage_key_scores.clone()), Float64Builder::new, DataType::Float64),
            nested_lists(
                rows.iter().map(|r| r.keys.iter().map(|k| k.tokens.clone()).collect()),
                UInt32Builder::new,
                DataType::UInt32,
            ),
            string_list_column(sources.iter().map(Vec::as_slice)),
            primitive_list_column::<Float64Type>(
                rows.iter().map(|r| r.keys.iter().map(|k| k.log_prob).collect()),
                DataType::Float64,
            ),
            primitive_list_column::<UInt64Type>(
                rows.iter().map(|r| r.keys.iter().map(|k| k.count).collect()),
                DataType::UInt64,
            ),
            primitive_list_column::<Float64Type>(
                rows.iter().map(|r| r.keys.iter().map(|k| k.weight).collect()),
                DataType::Float64,
            ),
        ]
    }

    fn from_batch(batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Self>> {
        let cols = BatchColumns { batch, path, first_row };
        let query_ids = cols.strings("query_id")?;
        let passage_ids = cols.string_lists("passage_ids")?;
        let key_sources = cols.string_lists("key_sources")?;
        let scores = cols.primitive_lists::<Float64Type>("scores")?;
        let log_probs = cols.primitive_lists::<Float64Type>("key_log_probs")?;
        let counts = cols.primitive_lists::<UInt64Type>("key_counts")?;
        let weights = cols.primitive_lists::<Float64Type>("key_weights")?;
        let passage_keys = read_nested::<UInt32Type>(cols.column("passage_keys")?, path, "passage_keys")?;
        let passage_key_scores =
            read_nested::<Float64Type>(cols.column("passage_key_scores")?, path, "passage_key_scores")?;
        let key_tokens = read_nested::<UInt32Type>(cols.column("key_tokens")?, path, "key_tokens")?;

        let mut rows = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let bad = |field: &str, detail: String| {
                Error::input(path, Position::Row(first_row + i as u64), field, "is inconsistent", detail)
            };
            let passages = passage_ids.get(i);
            let keys = key_tokens[i].len();
            for (name, len) in [("scores", scores[i].len()), ("passage_keys", passage_keys[i].len())] {
                if len != passages.len() {
                    return Err(bad(name, format!("{len} entries for {} passages", passages.len())));
                }
            }
            let sources = key_sources.get(i);
            for (name, len) in [
                ("key_sources", sources.len()),
                ("key_log_probs", log_probs[i].len()),
                ("key_counts", counts[i].len()),
                ("key_weights", weights[i].len()),
            ] {
                if len != keys {
                    return Err(bad(name, format!("{len} entries for {keys} keys")));
                }
            }
            if let Some(k) = passage_keys[i].iter().flatten().find(|&&k| k as usize >= keys) {
                return Err(bad("passage_keys", format!("key index {k} with {keys} keys")));
            }
            let shapes = |lists: &[Vec<f64>]| lists.iter().map(Vec::len).collect::<Vec<_>>();
            if shapes(&passage_key_scores[i]) != passage_keys[i].iter().map(Vec::len).collect::<Vec<_>>() {
                return Err(bad("passage_key_scores", "not one score per matched key".into()));
            }
            rows.push(QueryCandidates {
                query_id: query_ids.value(i).to_string(),
                passage_ids: passages,
                scores: scores[i].clone(),
                passage_keys: passage_keys[i].clone(),
                passage_key_scores: passage_key_scores[i].clone(),
                keys: (0..keys)
                    .map(|k| CandidateKey {
                        tokens: key_tokens[i][k].clone(),
                        source: sources[k].clone(),
                        log_prob: log_probs[i][k],
                        count: counts[i][k],
                        weight: weights[i][k],
                    })
                    .collect(),
            });
        }
        Ok(rows)
    }
}

/// A non-null `List<List<T>>` column; `values` makes the item builder.
fn nested_lists<B, T>(rows: impl Iterator<Item = Vec<Vec<T>>>, values: fn() -> B, item_type: DataType) -> ArrayRef
where
    B: arrow_array::builder::ArrayBuilder + Extend<Option<T>>,
{
    let inner = ListBuilder::new(values()).with_field(list_item(item_type.clone()));
    let mut builder = ListBuilder::new(inner).with_field(list_item(list_of(item_type)));
    for row in rows {
        for list in row {
            builder.values().values().extend(list.into_iter().map(Some));
            builder.values().append(true);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// Rows of a non-null `List<List<primitive>>` column.
fn read_nested<T: ArrowPrimitiveType>(array: &ArrayRef, path: &Path, name: &str) -> Result<Vec<Vec<Vec<T::Native>>>> {
    let outer = as_list(array.as_ref(), path, name)?;
    let inner = primitive_lists::<T>(outer.values(), path, name)?;
    let offsets = outer.value_offsets();
    Ok((0..outer.len()).map(|r| inner[offsets[r] as usize..offsets[r + 1] as usize].to_vec()).collect())
}
