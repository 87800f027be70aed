use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use anyhow::{Context, bail};
use dgr_core::arrow_file::read_records;
use dgr_core::atomic::write_atomic;
use dgr_core::trec::{Run, read_qrels, read_run};
use dgr_core::{Passage, Query};
use dgr_eval::{EvalReport, evaluate_answers, evaluate_qrels};

#[derive(clap::Args)]
pub struct Args {
    /// TREC run file to evaluate.
    #[arg(long)]
    run: PathBuf,
    /// TREC qrels file: Recall@k, MRR@10, nDCG@10.
    #[arg(long)]
    qrels: Option<PathBuf>,
    /// Queries file with answers, for answer-hit R@k (needs --corpus).
    #[arg(long, requires = "corpus")]
    queries: Option<PathBuf>,
    /// Corpus file holding the passages the run names (with --queries).
    #[arg(long, requires = "queries")]
    corpus: Option<PathBuf>,
    /// Cutoffs of Recall@k and answer-hit R@k, comma separated (default: eval.recall_at).
    #[arg(long, value_delimiter = ',')]
    recall_at: Option<Vec<usize>>,
    /// JSON output (default: the run path with `.eval.json` appended).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    if args.qrels.is_none() && args.queries.is_none() {
        bail!("nothing to evaluate against: give --qrels, or --queries with --corpus");
    }
    let recall_at = args.recall_at.clone().unwrap_or_else(|| config.eval.recall_at.clone());
    if recall_at.is_empty() || recall_at.contains(&0) {
        bail!("--recall-at needs cutoffs of at least 1");
    }
    let run = read_run(&args.run)?;
    let mut reports = Vec::new();
    if let Some(qrels) = &args.qrels {
        reports.push(("qrels", evaluate_qrels(&run, &read_qrels(qrels)?, &recall_at)));
    }
    if let (Some(queries), Some(corpus)) = (&args.queries, &args.corpus) {
        reports.push(("answers", answer_report(&run, queries, corpus, &recall_at)?));
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let mut name = args.run.clone().into_os_string();
        name.push(".eval.json");
        PathBuf::from(name)
    });
    print!("{}", table(&reports));
    let json: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|(name, report)| Ok((name.to_string(), serde_json::to_value(report)?)))
        .collect::<anyhow::Result<_>>()?;
    write_atomic(&out, &serde_json::to_vec_pretty(&json)?)?;
    tracing::info!(out = %out.display(), "wrote metrics");
    Ok(())
}

/// Answer-hit evaluation of `run` with the answers of `queries` over the texts of `corpus`.
pub fn answer_report(run: &Run, queries: &Path, corpus: &Path, at: &[usize]) -> anyhow::Result<EvalReport> {
    let queries: Vec<Query> = read_records(queries)?;
    let answers: HashMap<String, Vec<String>> = queries.into_iter().map(|q| (q.id, q.answers)).collect();
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
