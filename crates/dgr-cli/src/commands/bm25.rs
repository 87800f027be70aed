use std::path::PathBuf;

use crate::config::Config;
use anyhow::Context;
use dgr_bm25::{Bm25Index, IndexOptions, build_index};
use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::trec::write_run;
use figment::Figment;
use tracing::info;

use crate::progress::Bar;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build the BM25 index of a corpus.arrow (replaces an existing index).
    Index {
        /// Corpus file (default: <job.dir>/data/corpus.arrow).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Index directory (default: <job.dir>/bm25).
        #[arg(long)]
        index_dir: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Search a queries file and write a TREC run.
    Search {
        /// Index directory (default: <job.dir>/bm25).
        #[arg(long)]
        index_dir: Option<PathBuf>,
        /// Queries file (default: <job.dir>/data/queries-<split>.arrow).
        #[arg(long, required_unless_present = "split")]
        queries: Option<PathBuf>,
        /// Split of the job's dataset to search, instead of --queries.
        #[arg(long)]
        split: Option<String>,
        /// Output run file (default: <job.dir>/runs/bm25-<split>.trec).
        #[arg(long, required_unless_present = "split")]
        run: Option<PathBuf>,
        /// Documents per query (default: bm25.top_k).
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long)]
        threads: Option<usize>,
    },
}

impl Command {
    pub fn overrides(&self) -> Figment {
        let (threads, top_k) = match self {
            Command::Index { threads, .. } => (*threads, None),
            Command::Search { threads, top_k, .. } => (*threads, *top_k),
        };
        let mut figment = Figment::new();
        if let Some(threads) = threads {
            figment = figment.merge(("bm25.threads", threads));
        }
        if let Some(top_k) = top_k {
            figment = figment.merge(("bm25.top_k", top_k));
        }
        figment
    }
}

pub fn run(config: &Config, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Index { corpus, index_dir, .. } => {
            let corpus = corpus.clone().unwrap_or_else(|| config.job.data_dir().join("corpus.arrow"));
            let index_dir = index_dir.clone().unwrap_or_else(|| config.job.bm25_dir());
            index(config, &corpus, &index_dir)
        }
        Command::Search { index_dir, queries, split, run, .. } => {
            let index_dir = index_dir.clone().unwrap_or_else(|| config.job.bm25_dir());
            let split = split.as_deref().unwrap_or("custom");
            let queries =
                queries.clone().unwrap_or_else(|| config.job.data_dir().join(format!("queries-{split}.arrow")));
            let run = run.clone().unwrap_or_else(|| config.job.runs_dir().join(format!("bm25-{split}.trec")));
            search(config, &index_dir, &queries, &run)
        }
    }
}

pub fn index(config: &Config, corpus: &std::path::Path, index_dir: &std::path::Path) -> anyhow::Result<()> {
    let options = IndexOptions { threads: config.bm25.threads, memory_mb: config.bm25.memory_mb };
    let started = std::time::Instant::now();
    let manifest = build_index(corpus, index_dir, options, &Bar::new())
        .with_context(|| format!("cannot build BM25 index of {}", corpus.display()))?;
    info!(
        documents = manifest.documents,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        index = %index_dir.display(),
        "built BM25 index"
    );
    Ok(())
}

pub fn search(
    config: &Config,
    index_dir: &std::path::Path,
    queries: &std::path::Path,
    run_path: &std::path::Path,
) -> anyhow::Result<()> {
    let index = Bm25Index::open(index_dir)?;
    let queries: Vec<Query> = read_records(queries)?;
    let started = std::time::Instant::now();
    let run = index.search_all(&queries, config.bm25.top_k, config.bm25.threads, &Bar::new())?;
    let seconds = started.elapsed().as_secs_f64();
    write_run(run_path, &run, "dgr-bm25")?;
    info!(
        queries = queries.len(),
        ms_per_query = format!("{:.2}", 1000.0 * seconds / queries.len().max(1) as f64),
        run = %run_path.display(),
        "wrote BM25 run"
    );
    Ok(())
}
