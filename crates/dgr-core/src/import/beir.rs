//! BEIR layout (a directory):
//!
//! - `corpus.jsonl`: `{"_id": .., "title": .., "text": .., "metadata": {..}}` per line;
//! - `queries.jsonl`: `{"_id": .., "text": .., "metadata": {..}}` per line;
//! - `qrels/<split>.tsv`: header `query-id<TAB>corpus-id<TAB>score`, then one judgment a line.
//!
//! A query belongs to every split whose qrels name it; queries no qrels name are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::builder::DatasetBuilder;
use super::{numbered_lines, open_input, split_files};
use crate::error::{Error, Position, Result};
use crate::progress::Progress;
use crate::records::{Passage, Query};

pub(super) fn import(dir: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let corpus = dir.join("corpus.jsonl");
    let reader = open_input(&corpus, "corpus.jsonl", progress)?;
    for line in numbered_lines(&corpus, reader) {
        let (n, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_object(&corpus, n, &line).and_then(|obj| {
            Ok(Passage {
                id: id_field(&corpus, n, &obj, "_id")?,
                title: optional_text(&corpus, n, &obj, "title")?,
                text: optional_text(&corpus, n, &obj, "text")?,
                pseudo_queries: Vec::new(),
            })
        });
        match parsed {
            Ok(passage) => builder.add_passage(passage, &corpus, Position::Line(n))?,
            Err(e) => builder.reject(e)?,
        }
    }
    progress.finish();

    // Judgments first: they decide which split each query belongs to.
    let qrels = read_qrels(&dir.join("qrels"), builder, progress)?;
    let mut splits_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for judgment in &qrels {
        splits_of.entry(&judgment.query_id).or_default().insert(&judgment.split);
    }

    let queries = dir.join("queries.jsonl");
    let reader = open_input(&queries, "queries.jsonl", progress)?;
    for line in numbered_lines(&queries, reader) {
        let (n, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_object(&queries, n, &line).and_then(|obj| {
            Ok(Query {
                id: id_field(&queries, n, &obj, "_id")?,
                text: optional_text(&queries, n, &obj, "text")?,
                answers: Vec::new(),
            })
        });
        let query = match parsed {
            Ok(query) => query,
            Err(e) => {
                builder.reject(e)?;
                continue;
            }
        };
        match splits_of.get(query.id.as_str()) {
            None => builder.drop_record("query without judgments"),
            Some(splits) => {
                for split in splits {
                    builder.add_query(split, query.clone(), &queries, Position::Line(n))?;
                }
            }
        }
    }
    progress.finish();

    for j in &qrels {
        builder.add_qrel(&j.split, &j.query_id, &j.passage_id, j.relevance, &j.path, Position::Line(j.line))?;
    }
    Ok(())
}

struct Judgment {
    split: String,
    query_id: String,
    passage_id: String,
    relevance: i32,
    path: PathBuf,
    line: u64,
}

fn read_qrels(dir: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<Vec<Judgment>> {
    let files = split_files(dir, "", ".tsv")?;
    if files.is_empty() {
        return Err(Error::format(dir, "no qrels/<split>.tsv file found"));
    }
    let mut judgments = Vec::new();
    for (split, path) in files {
        let reader = open_input(&path, &format!("qrels/{split}.tsv"), progress)?;
        for line in numbered_lines(&path, reader) {
            let (n, line) = line?;
            let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
            if n == 1 && cols.first() == Some(&"query-id") {
                continue; // header
            }
            if line.trim().is_empty() {
                continue;
            }
            if cols.len() != 3 {
                let e = Error::input(
                    &path,
                    Position::Line(n),
                    "line",
                    "expected 3 tab-separated columns (query-id corpus-id score)",
                    format!("found {}", cols.len()),
                );
                builder.reject(e)?;
                continue;
            }
            let Ok(relevance) = cols[2].parse::<i32>() else {
                builder.reject(Error::input(&path, Position::Line(n), "score", "not an integer", cols[2]))?;
                continue;
            };
            judgments.push(Judgment {
                split: split.clone(),
                query_id: cols[0].to_string(),
                passage_id: cols[1].to_string(),
                relevance,
                path: path.clone(),
                line: n,
            });
        }
        progress.finish();
    }
    Ok(judgments)
}

fn parse_object(path: &Path, n: u64, line: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Error::input(path, Position::Line(n), "record", "is not a JSON object", "")),
        Err(e) => Err(Error::input(path, Position::Line(n), "record", "malformed JSON", e.to_string())),
    }
}

/// An id: a JSON string, or an integer written as its decimal form.
fn id_field(path: &Path, n: u64, obj: &Map<String, Value>, field: &str) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(num)) if num.is_u64() || num.is_i64() => Ok(num.to_string()),
        Some(_) => Err(Error::input(path, Position::Line(n), field, "is not a string", "")),
        None => Err(Error::input(path, Position::Line(n), field, "is missing", "")),
    }
}

/// A text field that may be absent (empty) but must be a string when present.
fn optional_text(path: &Path, n: u64, obj: &Map<String, Value>, field: &str) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(Error::input(path, Position::Line(n), field, "is not a string", "")),
    }
}
