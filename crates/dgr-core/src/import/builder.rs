//! Collects validated records of one import into a staging directory.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use tracing::warn;

use super::manifest::{DatasetManifest, ManifestFile};
use super::{DatasetFormat, ImportOptions};
use crate::arrow_file::RecordWriter;
use crate::atomic::StagingDir;
use crate::error::{Error, Position, Result};
use crate::records::{Passage, Query};
use crate::trec::{Qrels, check_id, write_qrels};

/// What an import produced and what it left out.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportSummary {
    pub passages: u64,
    /// split -> number of queries.
    pub queries: BTreeMap<String, u64>,
    /// split -> number of judgment lines.
    pub qrels: BTreeMap<String, u64>,
    /// Records left out by design of the importer (e.g. ambiguous descriptions), by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Malformed records skipped because `--skip-invalid` was given, by field and reason.
    pub skipped: BTreeMap<String, u64>,
}

/// Shown in full for the first few skipped records, then only counted.
const SKIP_WARNINGS: u64 = 10;

pub(super) struct DatasetBuilder {
    staging: StagingDir,
    format: DatasetFormat,
    input: String,
    skip_invalid: bool,
    split: super::SplitPercent,
    corpus: RecordWriter<Passage>,
    passage_ids: HashSet<String>,
    queries: BTreeMap<String, (RecordWriter<Query>, HashSet<String>)>,
    qrels: BTreeMap<String, Qrels>,
    summary: ImportSummary,
    skipped_total: u64,
}

impl DatasetBuilder {
    pub fn create(output: &Path, format: DatasetFormat, input: &Path, options: &ImportOptions) -> Result<Self> {
        let staging = StagingDir::create(output, options.overwrite)?;
        let corpus = RecordWriter::create(&staging.path().join("corpus.arrow"), &[("dgr.source", format.name())])?;
        Ok(DatasetBuilder {
            staging,
            format,
            input: input.display().to_string(),
            skip_invalid: options.skip_invalid,
            split: options.split,
            corpus,
            passage_ids: HashSet::new(),
            queries: BTreeMap::new(),
            qrels: BTreeMap::new(),
            summary: ImportSummary::default(),
            skipped_total: 0,
        })
    }

    /// Fails with `err`, or, under `--skip-invalid`, counts it and carries on.
    pub fn reject(&mut self, err: Error) -> Result<()> {
        let key = match &err {
            Error::Input { field, reason, .. } if self.skip_invalid => format!("{field}: {reason}"),
            _ => return Err(err),
        };
        self.skipped_total += 1;
        if self.skipped_total <= SKIP_WARNINGS {
            warn!("skipping record: {err}");
        }
        *self.summary.skipped.entry(key).or_default() += 1;
        Ok(())
    }

    /// Counts a record the importer leaves out by design.
    pub fn drop_record(&mut self, reason: &str) {
        *self.summary.dropped.entry(reason.to_string()).or_default() += 1;
    }

    pub fn split_percent(&self) -> super::SplitPercent {
        self.split
    }

    pub fn has_passage(&self, id: &str) -> bool {
        self.passage_ids.contains(id)
    }

    pub fn add_passage(&mut self, passage: Passage, path: &Path, position: Position) -> Result<()> {
        if let Err(e) = validate_passage(&passage, path, position.clone()) {
            return self.reject(e);
        }
        if !self.passage_ids.insert(passage.id.clone()) {
            let e = Error::input(path, position, "id", "duplicate passage id", passage.id);
            return self.reject(e);
        }
        self.summary.passages += 1;
        self.corpus.push(passage)
    }

    pub fn add_query(&mut self, split: &str, query: Query, path: &Path, position: Position) -> Result<()> {
        let checked = check_id(path, position.clone(), "id", &query.id).and_then(|_| {
            if query.text.trim().is_empty() {
                Err(Error::input(path, position.clone(), "text", "is empty", ""))
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            return self.reject(e);
        }
        let (writer, ids) = match self.queries.entry(split.to_string()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let file = self.staging.path().join(format!("queries-{split}.arrow"));
                let metadata = [("dgr.source", self.format.name()), ("dgr.split", split)];
                entry.insert((RecordWriter::create(&file, &metadata)?, HashSet::new()))
            }
        };
        if ids.insert(query.id.clone()) {
            return writer.push(query);
        }
        let e = Error::input(path, position, "id", "duplicate query id", query.id);
        self.reject(e)
    }

    pub fn has_query(&self, split: &str, id: &str) -> bool {
        self.queries.get(split).is_some_and(|(_, ids)| ids.contains(id))
    }

    /// Adds a judgment; the query must already be in `split` and the passage in the corpus.
    pub fn add_qrel(
        &mut self,
        split: &str,
        query_id: &str,
        passage_id: &str,
        relevance: i32,
        path: &Path,
        position: Position,
    ) -> Result<()> {
        if !self.has_query(split, query_id) {
            let e = Error::input(path, position, "query_id", "unknown query", query_id);
            return self.reject(e);
        }
        if !self.passage_ids.contains(passage_id) {
            let e = Error::input(path, position, "doc_id", "unknown passage", passage_id);
            return self.reject(e);
        }
        let judged = self.qrels.entry(split.to_string()).or_default();
        if judged.judgments.get(query_id).is_some_and(|docs| docs.contains_key(passage_id)) {
            let e = Error::input(
                path,
                position,
                "doc_id",
                "judged twice for the same query",
                format!("{query_id} {passage_id}"),
            );
            return self.reject(e);
        }
        judged.insert(query_id, passage_id, relevance);
        Ok(())
    }

    /// Writes the remaining files and the manifest, and moves the dataset into place.
    pub fn finish(mut self) -> Result<ImportSummary> {
        let dir = self.staging.path().to_path_buf();
        if self.summary.passages == 0 {
            return Err(Error::format(&self.input, "no passages imported"));
        }
        let mut files = vec![ManifestFile::describe(&dir, "corpus.arrow", "corpus", self.corpus.finish()?)?];
        for (split, (writer, _)) in std::mem::take(&mut self.queries) {
            let name = format!("queries-{split}.arrow");
            let rows = writer.finish()?;
            self.summary.queries.insert(split.clone(), rows);
            files.push(ManifestFile::describe(&dir, &name, "queries", rows)?.with_split(&split));
        }
        for (split, qrels) in &self.qrels {
            let name = format!("qrels-{split}.tsv");
            write_qrels(&dir.join(&name), qrels)?;
            let rows = qrels.len() as u64;
            self.summary.qrels.insert(split.clone(), rows);
            files.push(ManifestFile::describe(&dir, &name, "qrels", rows)?.with_split(split));
        }
        let manifest = DatasetManifest::new(self.format, &self.input, files, self.summary.clone());
        manifest.write(&dir)?;
        self.staging.commit()?;
        Ok(self.summary)
    }
}

fn validate_passage(passage: &Passage, path: &Path, position: Position) -> Result<()> {
    check_id(path, position.clone(), "id", &passage.id)?;
    if passage.text.trim().is_empty() {
        return Err(Error::input(path, position, "text", "is empty", ""));
    }
    Ok(())
}
