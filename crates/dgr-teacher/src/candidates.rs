//! The candidate lists a teacher scores, and the dataset that gives them text and labels.
//!
//! Candidates come from generative retrieval (`<job>/candidates/<split>/`, verified shard by
//! shard) or from a BM25 run (`<job>/runs/bm25-<split>.trec`). Either way the set is in the
//! order of the split's queries file, so a query range means the same queries to every worker.

use std::collections::HashMap;
use std::path::Path;

use dgr_core::arrow_file::read_records;
use dgr_core::candidates::{CANDIDATES_FORMAT, CANDIDATES_MANIFEST, CANDIDATES_VERSION, QueryCandidates};
use dgr_core::import::sha256_file;
use dgr_core::shards::{ShardManifest, read_shard_set};
use dgr_core::trec::{Qrels, read_qrels, read_run};
use dgr_core::{Passage, Query};
use tracing::warn;

use crate::error::{Result, TeacherError};

/// One query's candidates, best first by candidate score.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateList {
    pub query_id: String,
    pub passage_ids: Vec<String>,
    pub scores: Vec<f64>,
}

/// All candidate lists of a split, in query order.
#[derive(Debug, Clone)]
pub struct CandidateSet {
    pub split: String,
    /// Where the lists came from and the checksum of that input (`gr:…` or `bm25:…`).
    pub source: String,
    pub lists: Vec<CandidateList>,
}

impl CandidateSet {
    /// Candidate shards written by `dgr retrieve` (`dir` holds `candidates.json`); the best
    /// `depth` passages per query.
    pub fn from_gr(dir: &Path, split: &str, depth: usize) -> Result<Self> {
        let manifest = ShardManifest::open(dir, CANDIDATES_MANIFEST, CANDIDATES_FORMAT, CANDIDATES_VERSION)?;
        let rows: Vec<QueryCandidates> = read_shard_set(dir, &manifest)?;
        let (_, sha) = sha256_file(&dir.join(CANDIDATES_MANIFEST))?;
        let lists = rows
            .into_iter()
            .map(|row| CandidateList {
                query_id: row.query_id,
                passage_ids: row.passage_ids.into_iter().take(depth).collect(),
                scores: row.scores.into_iter().take(depth).collect(),
            })
            .collect();
        Ok(CandidateSet {
            split: split.to_string(),
            source: format!("gr:{} (candidates.json sha256 {sha})", dir.display()),
            lists,
        })
    }

    /// A TREC run (e.g. BM25's), in the order of `queries`; queries without results get empty
    /// lists.
    pub fn from_run(run_path: &Path, queries: &[Query], split: &str, depth: usize) -> Result<Self> {
        let mut run = read_run(run_path)?;
        let (_, sha) = sha256_file(run_path)?;
        let lists = queries
            .iter()
            .map(|query| {
                let docs = run.rankings.remove(&query.id).unwrap_or_default();
                let docs = &docs[..docs.len().min(depth)];
                CandidateList {
                    query_id: query.id.clone(),
                    passage_ids: docs.iter().map(|d| d.doc_id.clone()).collect(),
                    scores: docs.iter().map(|d| d.score).collect(),
                }
            })
            .collect();
        if let Some(stray) = run.rankings.keys().next() {
            return Err(TeacherError::Candidates {
                source_name: run_path.display().to_string(),
                message: format!("ranks query `{stray}`, which split `{split}` does not have"),
            });
        }
        Ok(CandidateSet {
            split: split.to_string(),
            source: format!("bm25:{} (sha256 {sha})", run_path.display()),
            lists,
        })
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Pairs in queries `first..end`.
    pub fn pairs(&self, first: usize, end: usize) -> usize {
        self.lists[first.min(self.len())..end.min(self.len())].iter().map(|l| l.passage_ids.len()).sum()
    }
}

/// Texts and labels of a prepared split: the corpus, the split's queries and its qrels.
pub struct Dataset {
    passages: HashMap<String, Passage>,
    pub queries: Vec<Query>,
    query_index: HashMap<String, usize>,
    pub qrels: Qrels,
}

impl Dataset {
    /// Reads `data_dir/corpus.arrow`, `queries-<split>.arrow` and, where present,
    /// `qrels-<split>.tsv` (without it every label is 0).
    pub fn load(data_dir: &Path, split: &str) -> Result<Self> {
        let corpus: Vec<Passage> = read_records(&data_dir.join("corpus.arrow"))?;
        let queries: Vec<Query> = read_records(&data_dir.join(format!("queries-{split}.arrow")))?;
        let qrels_path = data_dir.join(format!("qrels-{split}.tsv"));
        let qrels = if qrels_path.is_file() {
            read_qrels(&qrels_path)?
        } else {
            warn!(path = %qrels_path.display(), "no qrels for this split: every label is 0");
            Qrels::default()
        };
        let query_index = queries.iter().enumerate().map(|(i, q)| (q.id.clone(), i)).collect();
        Ok(Dataset { passages: corpus.into_iter().map(|p| (p.id.clone(), p)).collect(), queries, query_index, qrels })
    }

    pub fn query(&self, id: &str) -> Option<&Query> {
        self.query_index.get(id).map(|&i| &self.queries[i])
    }

    pub fn passage(&self, id: &str) -> Option<&Passage> {
        self.passages.get(id)
    }

    /// The passage as the teacher reads it: `title: text` (the text alone without a title).
    pub fn passage_text(&self, id: &str) -> Option<String> {
        self.passage(id).map(|p| if p.title.is_empty() { p.text.clone() } else { format!("{}: {}", p.title, p.text) })
    }

    /// The qrels relevance of each passage for the query (0 where unjudged).
    pub fn labels(&self, query_id: &str, passage_ids: &[String]) -> Vec<i32> {
        let judged = self.qrels.judgments.get(query_id);
        passage_ids.iter().map(|p| judged.and_then(|j| j.get(p)).copied().unwrap_or(0)).collect()
    }
}
