//! `dgr bm25`: the BM25 baseline's index and searches (dgr_pipeline::bm25).

use std::path::PathBuf;

use dgr_pipeline::Config;
use dgr_pipeline::bm25::{index, search};
use figment::Figment;

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
            Ok(index(config, &corpus, &index_dir, &Bar::new())?)
        }
        Command::Search { index_dir, queries, split, run, .. } => {
            let index_dir = index_dir.clone().unwrap_or_else(|| config.job.bm25_dir());
            let split = split.as_deref().unwrap_or("custom");
            let queries =
                queries.clone().unwrap_or_else(|| config.job.data_dir().join(format!("queries-{split}.arrow")));
            let run = run.clone().unwrap_or_else(|| config.job.runs_dir().join(format!("bm25-{split}.trec")));
            Ok(search(config, &index_dir, &queries, &run, &Bar::new())?)
        }
    }
}
