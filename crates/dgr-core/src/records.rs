//! The records every stage exchanges: passages and queries. Relevance judgments live in TREC
//! qrels files (see [`crate::trec`]).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};

use crate::arrow_file::{ArrowRecord, BatchColumns, string_list_column, string_list_type};
use crate::error::Result;

/// One retrievable unit of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// Unique, non-empty, without whitespace (it is a column of TREC files).
    pub id: String,
    /// May be empty where the source has no titles (MS MARCO).
    pub title: String,
    pub text: String,
    /// Pseudo-queries of the passage (identifier view of method §1); often empty.
    pub pseudo_queries: Vec<String>,
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Unique, non-empty, without whitespace.
    pub id: String,
    pub text: String,
    /// Answer strings for answer-hit evaluation (NQ/TriviaQA style); often empty.
    pub answers: Vec<String>,
}

impl ArrowRecord for Passage {
    const FORMAT: &'static str = "dgr.corpus";
    const VERSION: u32 = 1;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
            Field::new("pseudo_queries", string_list_type(), false),
        ]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.id))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.title))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|p| &p.text))),
            string_list_column(rows.iter().map(|p| p.pseudo_queries.as_slice())),
        ]
    }

    fn from_batch(batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Self>> {
        let cols = BatchColumns { batch, path, first_row };
        let (id, title, text) = (cols.strings("id")?, cols.strings("title")?, cols.strings("text")?);
        let pseudo_queries = cols.string_lists("pseudo_queries")?;
        Ok((0..batch.num_rows())
            .map(|i| Passage {
                id: id.value(i).to_string(),
                title: title.value(i).to_string(),
                text: text.value(i).to_string(),
                pseudo_queries: pseudo_queries.get(i),
            })
            .collect())
    }
}

impl ArrowRecord for Query {
    const FORMAT: &'static str = "dgr.queries";
    const VERSION: u32 = 1;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
            Field::new("answers", string_list_type(), false),
        ]
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|q| &q.id))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|q| &q.text))),
            string_list_column(rows.iter().map(|q| q.answers.as_slice())),
        ]
    }

    fn from_batch(batch: &RecordBatch, path: &Path, first_row: u64) -> Result<Vec<Self>> {
        let cols = BatchColumns { batch, path, first_row };
        let (id, text) = (cols.strings("id")?, cols.strings("text")?);
        let answers = cols.string_lists("answers")?;
        Ok((0..batch.num_rows())
            .map(|i| Query { id: id.value(i).to_string(), text: text.value(i).to_string(), answers: answers.get(i) })
            .collect())
    }
}
