//! `dgr run`: every stage of the configured job in order, reusing finished stages.

use std::io::Write as _;

use crate::config::Config;
use anyhow::Context;
use dgr_bm25::Bm25Index;
use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::atomic::write_atomic;
use dgr_core::import::{DatasetManifest, sha256_file};
use dgr_core::trec::read_qrels;
use dgr_eval::evaluate_qrels;
use tracing::info;

use super::{bm25, eval};

#[derive(clap::Args)]
pub struct Args {
    /// Redo every stage, even those whose outputs are already there.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    let data = config.job.data_dir();
    let input = config.prepare.input.display().to_string();
    let reuse_data = !args.overwrite
        && DatasetManifest::load(&data).is_ok_and(|m| m.source == config.prepare.format && m.input == input);
    if reuse_data {
        info!(dir = %data.display(), "dataset already prepared: reusing it");
    } else {
        super::prepare::prepare(config, &data, true)?;
    }
    let manifest = DatasetManifest::load(&data)?;

    let corpus = data.join("corpus.arrow");
    let index_dir = config.job.bm25_dir();
    let (_, corpus_sha) = sha256_file(&corpus)?;
    let index_current =
        !args.overwrite && Bm25Index::open(&index_dir).is_ok_and(|i| i.manifest().corpus_sha256 == corpus_sha);
    if index_current {
        info!(dir = %index_dir.display(), "BM25 index is current: reusing it");
    } else {
        bm25::index(config, &corpus, &index_dir)?;
    }

    let mut lines = Vec::new();
    for split in &config.eval.splits {
        let queries_path = data.join(format!("queries-{split}.arrow"));
        if manifest.file("queries", Some(split)).is_none() {
            anyhow::bail!("eval.splits names split `{split}`, but {} has no queries for it", data.display());
        }
        let run_path = config.job.runs_dir().join(format!("bm25-{split}.trec"));
        bm25::search(config, &index_dir, &queries_path, &run_path)?;
        let run = dgr_core::trec::read_run(&run_path)?;

        let mut reports = Vec::new();
        if manifest.file("qrels", Some(split)).is_some() {
            let qrels = read_qrels(&data.join(format!("qrels-{split}.tsv")))?;
            reports.push(("qrels", evaluate_qrels(&run, &qrels, &config.eval.recall_at)));
        }
        let queries: Vec<Query> = read_records(&queries_path)?;
        if queries.iter().any(|q| !q.answers.is_empty()) {
            reports.push(("answers", eval::answer_report(&run, &queries_path, &corpus, &config.eval.recall_at)?));
        }
        println!("== bm25 on {split} ({})", manifest.source);
        print!("{}", eval::table(&reports));
        for (kind, report) in &reports {
            lines.push(serde_json::json!({
                "stage": "bm25",
                "dataset": manifest.source,
                "split": split,
                "kind": kind,
                "queries": report.queries,
                "metrics": report.metrics,
            }));
        }
    }
    append_metrics(&config.job.dir.join("metrics.jsonl"), &lines)
}

/// Appends lines to `metrics.jsonl`, rewriting it atomically.
pub fn append_metrics(path: &std::path::Path, lines: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut contents = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for line in lines {
        serde_json::to_writer(&mut contents, line)?;
        contents.write_all(b"\n")?;
    }
    write_atomic(path, &contents)?;
    info!(path = %path.display(), "appended metrics");
    Ok(())
}
