//! MS MARCO passage ranking layout (a directory):
//!
//! - `collection.tsv`: `pid<TAB>passage` (no header, no quoting; passages have no titles);
//! - `queries.<split>.tsv`: `qid<TAB>query`, e.g. `queries.dev.small.tsv` gives split `dev.small`;
//! - `qrels.<split>.tsv`: TREC qrels (`qid 0 pid rel`), tab- or space-separated.

use std::path::Path;

use super::builder::DatasetBuilder;
use super::{numbered_lines, open_input, split_files};
use crate::error::{Error, Position, Result};
use crate::progress::Progress;
use crate::records::{Passage, Query};
use crate::trec::parse_qrels_line;

pub(super) fn import(dir: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let collection = dir.join("collection.tsv");
    let reader = open_input(&collection, "collection.tsv", progress)?;
    for line in numbered_lines(&collection, reader) {
        let (n, line) = line?;
        if line.is_empty() {
            continue;
        }
        match two_columns(&collection, n, &line, "pid", "passage") {
            Ok((id, text)) => {
                let passage = Passage {
                    id: id.to_string(),
                    title: String::new(),
                    text: text.to_string(),
                    pseudo_queries: Vec::new(),
                };
                builder.add_passage(passage, &collection, Position::Line(n))?
            }
            Err(e) => builder.reject(e)?,
        }
    }
    progress.finish();

    let query_files = split_files(dir, "queries.", ".tsv")?;
    if query_files.is_empty() {
        return Err(Error::format(dir, "no queries.<split>.tsv file found"));
    }
    for (split, path) in &query_files {
        let reader = open_input(path, &format!("queries.{split}.tsv"), progress)?;
        for line in numbered_lines(path, reader) {
            let (n, line) = line?;
            if line.is_empty() {
                continue;
            }
            match two_columns(path, n, &line, "qid", "query") {
                Ok((id, text)) => {
                    let query = Query { id: id.to_string(), text: text.to_string(), answers: Vec::new() };
                    builder.add_query(split, query, path, Position::Line(n))?
                }
                Err(e) => builder.reject(e)?,
            }
        }
        progress.finish();
    }

    for (split, path) in split_files(dir, "qrels.", ".tsv")? {
        let reader = open_input(&path, &format!("qrels.{split}.tsv"), progress)?;
        for line in numbered_lines(&path, reader) {
            let (n, line) = line?;
            match parse_qrels_line(&path, n, &line) {
                Ok(None) => {}
                Ok(Some((qid, pid, rel))) => builder.add_qrel(&split, qid, pid, rel, &path, Position::Line(n))?,
                Err(e) => builder.reject(e)?,
            }
        }
        progress.finish();
    }
    Ok(())
}

/// Splits `id<TAB>text` at the first tab.
fn two_columns<'a>(path: &Path, n: u64, line: &'a str, id: &str, text: &str) -> Result<(&'a str, &'a str)> {
    line.split_once('\t').ok_or_else(|| {
        Error::input(
            path,
            Position::Line(n),
            text,
            "missing (expected two tab-separated columns)",
            format!("{id} only"),
        )
    })
}
