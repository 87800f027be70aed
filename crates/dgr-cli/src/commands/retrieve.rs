//! `dgr retrieve`: generative retrieval with the stage-1 student over the FM-index (method §2).
//! Writes a TREC run and candidate shards (passages with the keys behind them) per split.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::tensor::Device;
use dgr_core::Query;
use dgr_core::arrow_file::{read_records, write_records};
use dgr_core::atomic::{StagingDir, write_atomic};
use dgr_core::candidates::{CandidateKey, QueryCandidates};
use dgr_core::config::Config;
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_core::trec::{Run, ScoredDoc, write_run};
use dgr_index::CorpusIndex;
use dgr_index::evidence::ScoringConfig;
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::retrieve::{KeySource, RetrievalConfig, Retrieved, Retriever};
use dgr_model::tokenizer::TextTokenizer;
use figment::Figment;
use serde::Serialize;
use tracing::info;

use crate::commands::index::open_index;
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Split of the job's dataset to retrieve for (queries-<split>.arrow).
    #[arg(long, default_value = "dev")]
    split: String,
    /// Only the first N queries of the split (a quick look, or a benchmark).
    #[arg(long)]
    limit: Option<usize>,
    /// Student directory (default: retrieve.model, else <job.dir>/stage1/weights/final).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Index directory (default: <job.dir>/index).
    #[arg(long)]
    index_dir: Option<PathBuf>,
    /// Beam width (default: retrieve.beam).
    #[arg(long)]
    beam: Option<usize>,
    /// Threads, each decoding its own batch (default: retrieve.threads; 0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Queries decoded together (default: retrieve.batch_queries).
    #[arg(long)]
    batch_queries: Option<usize>,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(beam) = self.beam {
            figment = figment.merge(("retrieve.beam", beam));
        }
        if let Some(threads) = self.threads {
            figment = figment.merge(("retrieve.threads", threads));
        }
        if let Some(batch) = self.batch_queries {
            figment = figment.merge(("retrieve.batch_queries", batch));
        }
        if let Some(model) = &self.model {
            figment = figment.merge(("retrieve.model", model));
        }
        figment
    }
}

/// `candidates.json`: the shards of one split, written after them.
#[derive(Serialize)]
struct CandidatesManifest {
    format: &'static str,
    version: u32,
    split: String,
    queries: usize,
    shards: Vec<ShardEntry>,
    model: String,
    index_sha256: String,
    beam: usize,
    hits: usize,
    program: String,
}

#[derive(Serialize)]
struct ShardEntry {
    file: String,
    queries: u64,
    sha256: String,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    let r = &config.retrieve;
    let model_dir =
        if r.model.as_os_str().is_empty() { config.job.stage1_dir().join("weights/final") } else { r.model.clone() };
    let index_dir = args.index_dir.clone().unwrap_or_else(|| config.job.index_dir());
    let (index, manifest) = open_index(config, &index_dir)?;
    let tokenizer = TextTokenizer::from_file(&config.index.tokenizer, r.max_source_tokens)?;
    let device = Device::flex();
    let (model, _, _) = Bert2Bert::load(&model_dir, &device).with_context(|| {
        format!("cannot load the student from {} (train one with `dgr train-gen`)", model_dir.display())
    })?;

    let queries_path = config.job.data_dir().join(format!("queries-{}.arrow", args.split));
    let mut queries: Vec<Query> =
        read_records(&queries_path).with_context(|| format!("no queries for split `{}`", args.split))?;
    if let Some(limit) = args.limit {
        queries.truncate(limit);
    }
    if queries.is_empty() {
        bail!("{} has no queries", queries_path.display());
    }
    let retrieval = RetrievalConfig {
        beam: r.beam,
        body_tokens: r.body_tokens,
        title_tokens: r.title_tokens,
        pseudo_query_tokens: r.pseudo_query_tokens,
        query_span_words: r.query_span_words,
        unigram_tokens: r.unigram_tokens,
        scoring: ScoringConfig {
            smoothing: r.smoothing,
            exponent: r.exponent,
            coverage: r.coverage,
            max_hits: r.max_hits,
            candidates: r.candidates,
        },
        hits: r.hits,
    };
    let retriever = Retriever::new(&model, &tokenizer, &index, retrieval, device)?;

    let started = Instant::now();
    let results = retrieve_all(&retriever, &queries, r.batch_queries, threads(r.threads), &Bar::new())?;
    let seconds = started.elapsed().as_secs_f64();

    let mut run = Run::default();
    let mut rows = Vec::with_capacity(queries.len());
    for (query, retrieved) in queries.iter().zip(&results) {
        let row = candidates_row(&index, &query.id, retrieved);
        let ranking = row.passage_ids.iter().zip(&row.scores);
        run.rankings
            .insert(query.id.clone(), ranking.map(|(id, &score)| ScoredDoc { doc_id: id.clone(), score }).collect());
        rows.push(row);
    }
    let run_path = config.job.runs_dir().join(format!("gr-{}.trec", args.split));
    write_run(&run_path, &run, "dgr-gr")?;
    let out = config.job.candidates_dir().join(&args.split);
    let shards = write_shards(&out, rows, r.shard_queries, &args.split)?;
    let manifest = CandidatesManifest {
        format: "dgr.candidate-shards",
        version: 1,
        split: args.split.clone(),
        queries: queries.len(),
        shards,
        model: model_dir.display().to_string(),
        index_sha256: manifest.index_sha256,
        beam: r.beam,
        hits: r.hits,
        program: concat!("dgr ", env!("CARGO_PKG_VERSION")).into(),
    };
    write_atomic(&out.join("candidates.json"), &serde_json::to_vec_pretty(&manifest)?)?;

    let mut model_ms: Vec<f64> = results.iter().map(|r| ms(r.model_time)).collect();
    let mut index_ms: Vec<f64> = results.iter().map(|r| ms(r.index_time)).collect();
    info!(
        queries = queries.len(),
        seconds = format!("{seconds:.1}"),
        queries_per_second = format!("{:.2}", queries.len() as f64 / seconds),
        model_ms_p50 = format!("{:.1}", percentile(&mut model_ms, 0.5)),
        model_ms_p99 = format!("{:.1}", percentile(&mut model_ms, 0.99)),
        index_ms_p50 = format!("{:.2}", percentile(&mut index_ms, 0.5)),
        index_ms_p99 = format!("{:.2}", percentile(&mut index_ms, 0.99)),
        run = %run_path.display(),
        candidates = %out.display(),
        "retrieved"
    );
    Ok(())
}

fn threads(configured: usize) -> usize {
    if configured > 0 { configured } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// Retrieves for every query, in batches of `batch` queries, on `threads` threads that take
/// batches in turn; results in query order. The first error stops the work.
fn retrieve_all(
    retriever: &Retriever<'_, Bert2Bert>,
    queries: &[Query],
    batch: usize,
    threads: usize,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Retrieved>> {
    let batches: Vec<&[Query]> = queries.chunks(batch.max(1)).collect();
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Vec<Retrieved>>>> = Mutex::new(vec![None; batches.len()]);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    progress.begin("retrieve", queries.len() as u64, Unit::Items);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(batches.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batches.len() || failure.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    let texts: Vec<&str> = batches[i].iter().map(|q| q.text.as_str()).collect();
                    match retriever.retrieve_batch(&texts) {
                        Ok(found) => {
                            if let Ok(mut slots) = slots.lock() {
                                slots[i] = Some(found);
                            }
                            progress.advance(texts.len() as u64);
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                let first = batches[i].first().map_or("", |q| q.id.as_str());
                                f.get_or_insert(anyhow::Error::new(e).context(format!("batch from query {first}")));
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    let slots = slots.into_inner().map_err(|_| anyhow::anyhow!("a retrieval thread panicked"))?;
    let batches = slots.into_iter().collect::<Option<Vec<_>>>().context("a retrieval thread stopped early")?;
    Ok(batches.into_iter().flatten().collect())
}

fn candidates_row(index: &CorpusIndex, query_id: &str, retrieved: &Retrieved) -> QueryCandidates {
    let ranking = &retrieved.ranking;
    let keys = ranking
        .keys
        .iter()
        .zip(&retrieved.key_sources)
        .map(|(key, source)| CandidateKey {
            tokens: key.tokens.clone(),
            source: match source {
                KeySource::Decoded(view) => view.name().to_string(),
                KeySource::QuerySpan => "query-span".to_string(),
                KeySource::Unigram => "unigram".to_string(),
            },
            log_prob: key.log_prob,
            count: key.count,
            weight: key.weight,
        })
        .collect();
    QueryCandidates {
        query_id: query_id.to_string(),
        passage_ids: ranking
            .passages
            .iter()
            .map(|p| index.passage_id(p.passage).unwrap_or_default().to_string())
            .collect(),
        scores: ranking.passages.iter().map(|p| p.score).collect(),
        passage_keys: ranking.passages.iter().map(|p| p.keys.iter().map(|m| m.key as u32).collect()).collect(),
        passage_key_scores: ranking.passages.iter().map(|p| p.keys.iter().map(|m| m.score).collect()).collect(),
        keys,
    }
}

/// Writes `rows` as `shard-NNNNN.arrow` files of `per_shard` queries into `out`, replacing it
/// as a whole; returns the shard entries for the manifest.
fn write_shards(
    out: &Path,
    rows: Vec<QueryCandidates>,
    per_shard: usize,
    split: &str,
) -> anyhow::Result<Vec<ShardEntry>> {
    let staging = StagingDir::create(out, true)?;
    let mut entries = Vec::new();
    for (n, chunk) in rows.chunks(per_shard).enumerate() {
        let file = format!("shard-{n:05}.arrow");
        let path = staging.path().join(&file);
        let first = chunk.first().map(|r| r.query_id.as_str()).unwrap_or_default();
        let last = chunk.last().map(|r| r.query_id.as_str()).unwrap_or_default();
        let shard = n.to_string();
        let metadata =
            [("dgr.split", split), ("dgr.shard", shard.as_str()), ("dgr.first_query", first), ("dgr.last_query", last)];
        let queries = write_records(&path, &metadata, chunk.iter().cloned())?;
        entries.push(ShardEntry { file, queries, sha256: sha256_file(&path)?.1 });
    }
    staging.commit()?;
    Ok(entries)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
}
