//! Evaluation of TREC runs as the job reports it: qrels metrics, answer-hit R@k, and a plain
//! table of them.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Context, Result, bail};
use dgr_core::arrow_file::read_records;
use dgr_core::trec::Run;
use dgr_core::{Passage, Query};
use dgr_eval::{EvalReport, evaluate_answers};

/// Answer-hit evaluation of `run` with the answers of the queries file `queries` over the texts
/// of `corpus`.
pub fn answer_report(run: &Run, queries: &Path, corpus: &Path, at: &[usize]) -> Result<EvalReport> {
    answer_hits(run, &read_records(queries)?, corpus, at)
}

/// Answer-hit evaluation of `run` over `queries` (those only) and the texts of `corpus`.
pub fn answer_hits(run: &Run, queries: &[Query], corpus: &Path, at: &[usize]) -> Result<EvalReport> {
    let answers: HashMap<String, Vec<String>> = queries.iter().map(|q| (q.id.clone(), q.answers.clone())).collect();
    if answers.values().all(Vec::is_empty) {
        bail!("the queries file has no answers: answer-hit R@k needs queries with answers");
    }
    let passages: Vec<Passage> = read_records(corpus).context("cannot read corpus for answer matching")?;
    let texts: HashMap<&str, &str> = passages.iter().map(|p| (p.id.as_str(), p.text.as_str())).collect();
    Ok(evaluate_answers(run, &answers, |id| texts.get(id).copied(), at))
}

/// A plain-text table: one row per metric, cutoffs in numeric order.
pub fn table(reports: &[(&str, EvalReport)]) -> String {
    let mut out = String::new();
    for (name, report) in reports {
        out.push_str(&format!("{:<16} {:>10}\n", format!("[{name}] queries"), report.queries));
        let mut rows: Vec<(&String, &f64)> = report.metrics.iter().collect();
        rows.sort_by_key(|(metric, _)| {
            let (family, cutoff) = metric.split_once('@').unwrap_or((metric.as_str(), ""));
            (family.to_string(), cutoff.parse::<usize>().unwrap_or(0))
        });
        for (metric, value) in rows {
            out.push_str(&format!("{metric:<16} {value:>10.4}\n"));
        }
    }
    out
}
