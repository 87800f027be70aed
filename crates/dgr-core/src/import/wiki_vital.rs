//! Wikipedia "Vital Articles" lead paragraphs as a known-item retrieval task.
//!
//! Input: `summaries_en-us.json`, one object `title -> {title, extract, description, topic}`.
//! Each article is a passage (id = title with whitespace replaced by `_`, the Wikipedia URL
//! form). Its Wikidata short description is a query whose one relevant passage is the article,
//! with query id = passage id. Articles without a description, and descriptions shared by
//! several articles (ambiguous as known-item queries), give no query. Queries are split
//! deterministically by the SHA-256 of the title.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::builder::DatasetBuilder;
use super::{SplitPercent, open_input};
use crate::error::{Error, Position, Result};
use crate::progress::Progress;
use crate::records::{Passage, Query};

#[derive(serde::Deserialize)]
struct Entry {
    title: Option<String>,
    extract: Option<String>,
    description: Option<String>,
}

pub(super) fn import(input: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let reader = open_input(input, "wiki-vital", progress)?;
    let entries: BTreeMap<String, Entry> = serde_json::from_reader(reader)
        .map_err(|e| Error::input(input, Position::Line(e.line() as u64), "json", "malformed JSON", e.to_string()))?;
    progress.finish();

    let mut description_uses: HashMap<&str, u32> = HashMap::new();
    for entry in entries.values() {
        if let Some(d) = entry.description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            *description_uses.entry(d).or_default() += 1;
        }
    }

    let split_percent = builder.split_percent();
    let mut queries = Vec::new();
    for (key, entry) in &entries {
        let position = Position::Record(key.clone());
        let title = entry.title.clone().unwrap_or_else(|| key.clone());
        if title != *key {
            builder.reject(Error::input(input, position, "title", "differs from the record key", title))?;
            continue;
        }
        let id = passage_id(&title);
        let passage = Passage {
            id: id.clone(),
            title: title.clone(),
            text: entry.extract.clone().unwrap_or_default(),
            pseudo_queries: Vec::new(),
        };
        let before = builder.has_passage(&id);
        builder.add_passage(passage, input, position.clone())?;
        if before || !builder.has_passage(&id) {
            continue; // rejected and skipped: no query for it either
        }
        match entry.description.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            None => builder.drop_record("article without description: no query"),
            Some(d) if description_uses.get(d).copied().unwrap_or(0) > 1 => {
                builder.drop_record("description shared by several articles: no query")
            }
            Some(d) => queries.push((split_of(&title, split_percent), id, d.to_string(), position)),
        }
    }
    // Queries after the corpus, so that each qrel can be checked against both.
    for (split, id, text, position) in queries {
        let query = Query { id: id.clone(), text, answers: Vec::new() };
        builder.add_query(split, query, input, position.clone())?;
        builder.add_qrel(split, &id, &id, 1, input, position)?;
    }
    Ok(())
}

/// The Wikipedia URL form of a title: whitespace becomes `_`.
pub fn passage_id(title: &str) -> String {
    title.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect()
}

/// Deterministic split of an article: the first 8 bytes of SHA-256(title), big-endian,
/// modulo 100, against the cumulative percentages.
pub fn split_of(title: &str, percent: SplitPercent) -> &'static str {
    let digest = Sha256::digest(title.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let bucket = u64::from_be_bytes(first) % 100;
    if bucket < u64::from(percent.train) {
        "train"
    } else if bucket < u64::from(percent.train) + u64::from(percent.dev) {
        "dev"
    } else {
        "test"
    }
}
