//! The job's results: BM25, the stage-1 generative retriever (GR) and the distilled one (DGR)
//! evaluated on the same queries of each split, written to `<job.dir>/results.json` and shown
//! as one table.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::atomic::write_atomic;
use dgr_core::trec::{read_qrels, read_run};
use dgr_eval::{EvalReport, evaluate_qrels};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, bail};

pub const RESULTS_FORMAT: &str = "dgr.results";
pub const RESULTS_VERSION: u32 = 1;
pub const RESULTS_FILE: &str = "results.json";

/// The metrics the table shows, in its column order, with their headings.
const COLUMNS: [(&str, &str); 5] =
    [("recall@5", "R@5"), ("recall@20", "R@20"), ("recall@100", "R@100"), ("mrr@10", "MRR@10"), ("ndcg@10", "nDCG@10")];

/// One system on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRow {
    /// `bm25`, `gr` (stage 1) or `dgr` (stage 2).
    pub system: String,
    pub split: String,
    /// `qrels` (Recall@k, MRR@10, nDCG@10) or `answers` (answer-hit R@k).
    pub kind: String,
    /// Queries evaluated (those with a relevant passage, among the split's first
    /// `run.eval_queries`).
    pub queries: usize,
    pub metrics: BTreeMap<String, f64>,
    /// The TREC run evaluated.
    pub run: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResults {
    /// Always `dgr.results`.
    pub format: String,
    pub version: u32,
    /// The dataset's source format, e.g. `wiki-vital`.
    pub dataset: String,
    pub rows: Vec<ResultRow>,
    /// Why the numbers may differ from a full run (sized-down stages), for whoever reads them.
    pub notes: Vec<String>,
}

/// A system's run on a split, to evaluate.
pub struct SystemRun {
    pub system: &'static str,
    pub split: String,
    pub run: PathBuf,
}

/// Evaluates every run on the first `limit` queries of its split (all for 0).
pub fn evaluate(
    data_dir: &Path,
    dataset: &str,
    runs: &[SystemRun],
    limit: usize,
    recall_at: &[usize],
    notes: Vec<String>,
) -> Result<JobResults> {
    let mut rows = Vec::new();
    for system in runs {
        let split = &system.split;
        let queries_path = data_dir.join(format!("queries-{split}.arrow"));
        let mut queries: Vec<Query> =
            read_records(&queries_path).with_context(|| format!("no queries for split `{split}` to evaluate"))?;
        if limit > 0 {
            queries.truncate(limit);
        }
        let evaluated: HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
        let run = read_run(&system.run).with_context(|| format!("cannot read the {} run", system.system))?;
        let mut reports: Vec<(&str, EvalReport)> = Vec::new();
        let qrels_path = data_dir.join(format!("qrels-{split}.tsv"));
        if qrels_path.is_file() {
            let mut qrels = read_qrels(&qrels_path)?;
            qrels.judgments.retain(|query, _| evaluated.contains(query.as_str()));
            reports.push(("qrels", evaluate_qrels(&run, &qrels, recall_at)));
        }
        if queries.iter().any(|q| !q.answers.is_empty()) {
            let corpus = data_dir.join("corpus.arrow");
            reports.push(("answers", crate::evaluate::answer_hits(&run, &queries, &corpus, recall_at)?));
        }
        if reports.is_empty() {
            bail!("split `{split}` has neither qrels nor answers to evaluate against");
        }
        for (kind, report) in reports {
            rows.push(ResultRow {
                system: system.system.to_string(),
                split: split.clone(),
                kind: kind.to_string(),
                queries: report.queries,
                metrics: report.metrics.into_iter().collect(),
                run: system.run.clone(),
            });
        }
    }
    Ok(JobResults {
        format: RESULTS_FORMAT.into(),
        version: RESULTS_VERSION,
        dataset: dataset.to_string(),
        rows,
        notes,
    })
}

impl JobResults {
    pub fn path(job_dir: &Path) -> PathBuf {
        job_dir.join(RESULTS_FILE)
    }

    pub fn write(&self, job_dir: &Path) -> Result<()> {
        write_atomic(&Self::path(job_dir), format!("{}\n", serde_json::to_string_pretty(self)?).as_bytes())?;
        Ok(())
    }

    pub fn load(job_dir: &Path) -> Result<Self> {
        let path = Self::path(job_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let results: JobResults =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a results file", path.display()))?;
        if results.format != RESULTS_FORMAT || results.version != RESULTS_VERSION {
            bail!(
                "{}: format {} version {}, this program reads {RESULTS_FORMAT} version {RESULTS_VERSION}",
                path.display(),
                results.format,
                results.version
            );
        }
        Ok(results)
    }

    /// The table a person reads: one line per system and split, metrics in percent.
    pub fn table(&self) -> String {
        let mut out = format!("{:<6} {:<6} {:<8} {:>8}", "system", "split", "kind", "queries");
        for (_, heading) in COLUMNS {
            out.push_str(&format!(" {heading:>8}"));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("{:<6} {:<6} {:<8} {:>8}", row.system, row.split, row.kind, row.queries));
            for (metric, _) in COLUMNS {
                let value = row.metrics.get(metric).map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
                out.push_str(&format!(" {value:>8}"));
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}
