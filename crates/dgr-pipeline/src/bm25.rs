//! The BM25 baseline stage: the index of the corpus, and TREC runs of a split's queries.

use std::path::Path;

use crate::config::Config;
use crate::error::{Context, Result};
use dgr_bm25::{Bm25Index, IndexOptions, build_index};
use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::trec::write_run;
use tracing::info;

use dgr_core::progress::Progress;

/// Builds the BM25 index of `corpus` into `index_dir`.
pub fn index(config: &Config, corpus: &Path, index_dir: &Path, progress: &dyn Progress) -> Result<()> {
    let options = IndexOptions { threads: config.bm25.threads, memory_mb: config.bm25.memory_mb };
    let started = std::time::Instant::now();
    let manifest = build_index(corpus, index_dir, options, progress)
        .with_context(|| format!("cannot build BM25 index of {}", corpus.display()))?;
    info!(
        documents = manifest.documents,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        index = %index_dir.display(),
        "built BM25 index"
    );
    Ok(())
}

/// Searches the queries of `queries` into the TREC run `run_path`.
pub fn search(
    config: &Config,
    index_dir: &Path,
    queries: &Path,
    run_path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let index = Bm25Index::open(index_dir)?;
    let queries: Vec<Query> = read_records(queries)?;
    let started = std::time::Instant::now();
    let run = index.search_all(&queries, config.bm25.top_k, config.bm25.threads, progress)?;
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
