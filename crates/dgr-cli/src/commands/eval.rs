//! `dgr eval`: metrics of a TREC run against qrels and/or answers.

use std::path::PathBuf;

use anyhow::bail;
use dgr_core::atomic::write_atomic;
use dgr_core::trec::{read_qrels, read_run};
use dgr_eval::evaluate_qrels;
use dgr_pipeline::Config;
use dgr_pipeline::evaluate::{answer_report, table};

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
