//! The retrieve stage: generative retrieval with the stage-1 student over the FM-index (method §2).
//! Writes a TREC run and candidate shards (passages with the keys behind them) per split.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, RetrieveConfig};
use crate::error::{Context, PipelineError, Result, bail};
use dgr_coordinator::api::ShardSpec;
use dgr_coordinator::ledger::JobSpec;
use dgr_coordinator::worker::ShardWork;
use dgr_core::Query;
use dgr_core::arrow_file::{read_records, write_records};
use dgr_core::atomic::StagingDir;
use dgr_core::candidates::{CANDIDATES_FORMAT, CANDIDATES_MANIFEST, CANDIDATES_VERSION, CandidateKey, QueryCandidates};
use dgr_core::import::sha256_file;
use dgr_core::progress::{NoProgress, Progress, Unit};
use dgr_core::shards::{ShardEntry, ShardManifest, read_verified_shard, shard_file_name, shard_ranges};
use dgr_core::trec::{Run, ScoredDoc, write_run};
use dgr_index::CorpusIndex;
use dgr_index::store::read_manifest;
use dgr_model::retrieve::{Retrieved, Retriever};
use dgr_model::student::Student as StudentModel;
use dgr_model::tokenizer::TextTokenizer;
use tracing::info;

use crate::index::open_index;
use crate::training::weights_checksum;

/// What the retrieve stage reads, and the fingerprint that ties a coordinator and its workers
/// to the same inputs and settings.
pub struct RetrieveInputs {
    task: RetrieveTask,
    queries: Vec<Query>,
    model_dir: PathBuf,
    index_dir: PathBuf,
    index_sha256: String,
    model_sha256: String,
    fingerprint: String,
}

/// Which student retrieves: its weights, and where its run and candidates go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Student {
    /// The stage-1 student (`retrieve.model`, else `<job.dir>/stage1/weights/final`):
    /// `runs/gr-<split>.trec` and `candidates/<split>/`.
    #[default]
    Stage1,
    /// The distilled student (`<job.dir>/stage2/weights/final`): `runs/dgr-<split>.trec` and
    /// `candidates/dgr/<split>/`.
    Stage2,
}

impl Student {
    /// `gr` or `dgr`: the run's name and tag.
    pub fn name(self) -> &'static str {
        match self {
            Student::Stage1 => "gr",
            Student::Stage2 => "dgr",
        }
    }

    pub fn model_dir(self, config: &Config) -> PathBuf {
        match self {
            Student::Stage1 => config.job.student_or_stage1(&config.retrieve.model),
            Student::Stage2 => config.job.stage2_dir().join("weights/final"),
        }
    }
}

/// One retrieval: a split (or its first `limit` queries) by one student over an index.
#[derive(Debug, Clone, Default)]
pub struct RetrieveTask {
    pub split: String,
    pub student: Student,
    /// Only the first N queries of the split (a quick look, a benchmark, a sized-down job).
    pub limit: Option<usize>,
    /// Index directory (default: `<job.dir>/index`).
    pub index_dir: Option<PathBuf>,
}

impl RetrieveTask {
    /// The whole split, by the stage-1 student.
    pub fn split(split: &str) -> Self {
        RetrieveTask { split: split.to_string(), ..RetrieveTask::default() }
    }

    pub fn run_path(&self, config: &Config) -> PathBuf {
        config.job.runs_dir().join(format!("{}-{}.trec", self.student.name(), self.split))
    }

    pub fn candidates_dir(&self, config: &Config) -> PathBuf {
        match self.student {
            Student::Stage1 => config.job.candidates_dir().join(&self.split),
            Student::Stage2 => config.job.candidates_dir().join("dgr").join(&self.split),
        }
    }
}

impl RetrieveInputs {
    pub fn load(config: &Config, task: &RetrieveTask) -> Result<Self> {
        let split = task.split.as_str();
        let r = &config.retrieve;
        let model_dir = task.student.model_dir(config);
        let index_dir = task.index_dir.clone().unwrap_or_else(|| config.job.index_dir());
        let index_sha256 = read_manifest(&index_dir)
            .context("cannot open the FM-index (build it with `dgr index build`)")?
            .index_sha256;
        let queries_path = config.job.data_dir().join(format!("queries-{split}.arrow"));
        let mut queries: Vec<Query> =
            read_records(&queries_path).with_context(|| format!("no queries for split `{split}`"))?;
        if let Some(limit) = task.limit {
            queries.truncate(limit);
        }
        if queries.is_empty() {
            bail!("{} has no queries", queries_path.display());
        }
        let hint = match task.student {
            Student::Stage1 => "train one with `dgr train-gen`",
            Student::Stage2 => "train one with `dgr train-distill`",
        };
        let model_sha256 =
            weights_checksum(&model_dir).with_context(|| format!("no student in {} ({hint})", model_dir.display()))?;
        // Threads are each machine's own business; everything else shapes the results.
        let settings = serde_json::to_string(&RetrieveConfig { threads: 0, ..r.clone() })?;
        let fingerprint = format!(
            "student {} sha256 {model_sha256}; index sha256 {index_sha256}; queries {} ({}); retrieve {settings}",
            model_dir.display(),
            queries.len(),
            queries_path.display()
        );
        Ok(RetrieveInputs {
            task: task.clone(),
            queries,
            model_dir,
            index_dir,
            index_sha256,
            model_sha256,
            fingerprint,
        })
    }

    /// The job a coordinator runs for these inputs.
    pub fn job(&self, config: &Config) -> JobSpec {
        let shards = shard_ranges(self.queries.len(), config.retrieve.shard_queries)
            .into_iter()
            .map(|(first, end)| (first as u64, (end - first) as u64))
            .collect();
        JobSpec {
            stage: "retrieve".into(),
            split: self.task.split.clone(),
            shards,
            output_dir: self.task.candidates_dir(config),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Writes the TREC run and the manifest of a set whose shards are in place in `out`.
    pub fn finish(&self, config: &Config, out: &Path, shards: Vec<ShardEntry>) -> Result<()> {
        let mut run = Run::default();
        for shard in &shards {
            for row in read_verified_shard::<QueryCandidates>(out, shard)? {
                add_to_run(&mut run, &row);
            }
        }
        write_run(&self.task.run_path(config), &run, &format!("dgr-{}", self.task.student.name()))?;
        self.manifest(config, shards).write(out, CANDIDATES_MANIFEST)?;
        Ok(())
    }

    fn manifest(&self, config: &Config, shards: Vec<ShardEntry>) -> ShardManifest {
        let r = &config.retrieve;
        let provenance = serde_json::json!({
            "model": self.model_dir.display().to_string(),
            "model_sha256": self.model_sha256,
            "index_sha256": self.index_sha256,
            "beam": r.search.beam,
            "hits": r.search.hits,
            "program": concat!("dgr ", env!("CARGO_PKG_VERSION")),
        });
        ShardManifest {
            format: CANDIDATES_FORMAT.into(),
            version: CANDIDATES_VERSION,
            split: self.task.split.clone(),
            queries: shards.iter().map(|s| s.queries).sum(),
            shards,
            provenance: provenance.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// The student and the index, loaded once, retrieving for ranges of the split's queries.
pub struct RetrieveWork {
    model: StudentModel,
    tokenizer: TextTokenizer,
    index: CorpusIndex,
    settings: RetrieveConfig,
    inputs: RetrieveInputs,
}

impl RetrieveWork {
    pub fn load(config: &Config, task: &RetrieveTask) -> Result<Self> {
        Self::from_inputs(config, RetrieveInputs::load(config, task)?)
    }

    fn from_inputs(config: &Config, inputs: RetrieveInputs) -> Result<Self> {
        let r = &config.retrieve;
        let (index, _) = open_index(config, &inputs.index_dir)?;
        let tokenizer = TextTokenizer::from_file(&config.index.tokenizer, r.max_source_tokens)?;
        let (model, _) = StudentModel::load(&inputs.model_dir, &config.device.select(0)?)
            .with_context(|| format!("cannot load the student from {}", inputs.model_dir.display()))?;
        Ok(RetrieveWork { model, tokenizer, index, settings: r.clone(), inputs })
    }

    /// Candidates of `queries`, in order, with the retrieval timings.
    fn retrieve(
        &self,
        queries: &[Query],
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<(Vec<QueryCandidates>, Vec<Retrieved>)> {
        let retriever = retriever(&self.settings, &self.model, &self.tokenizer, &self.index)?;
        let (batch, workers) = (self.settings.batch_queries, threads(self.settings.threads));
        let results = retrieve_all(&retriever, queries, batch, workers, progress, cancel)?;
        let rows = queries.iter().zip(&results).map(|(q, r)| candidates_row(&self.index, &q.id, r)).collect();
        Ok((rows, results))
    }
}

impl ShardWork for RetrieveWork {
    fn fingerprint(&self) -> &str {
        &self.inputs.fingerprint
    }

    fn compute(&self, shard: ShardSpec, path: &Path, cancel: &AtomicBool) -> Result<u64, String> {
        let (first, end) = (shard.first as usize, (shard.first + shard.count) as usize);
        let queries = self.inputs.queries.get(first..end).ok_or_else(|| {
            format!(
                "shard {} (queries {first}..{end}) is outside the split's {} queries",
                shard.id,
                self.inputs.queries.len()
            )
        })?;
        let (rows, _) = self.retrieve(queries, &NoProgress, cancel).map_err(|e| crate::error::report(&e))?;
        write_shard(path, &rows, &self.inputs.task.split, shard.id as usize).map_err(|e| e.to_string())
    }
}

/// Retrieves in this process: the TREC run and the candidate set, written whole.
pub fn retrieve_split(config: &Config, task: &RetrieveTask, progress: &dyn Progress) -> Result<()> {
    let work = RetrieveWork::load(config, task)?;
    let queries = &work.inputs.queries;

    let started = Instant::now();
    let (rows, results) = work.retrieve(queries, progress, &AtomicBool::new(false))?;
    let seconds = started.elapsed().as_secs_f64();

    let mut run = Run::default();
    for row in &rows {
        add_to_run(&mut run, row);
    }
    let run_path = task.run_path(config);
    write_run(&run_path, &run, &format!("dgr-{}", task.student.name()))?;
    let out = task.candidates_dir(config);
    let staging = StagingDir::create(&out, true)?;
    let mut shards = Vec::new();
    for (n, chunk) in rows.chunks(config.retrieve.shard_queries).enumerate() {
        let path = staging.path().join(shard_file_name(n));
        let queries = write_shard(&path, chunk, &task.split, n)?;
        shards.push(ShardEntry { file: shard_file_name(n), queries, sha256: sha256_file(&path)?.1 });
    }
    work.inputs.manifest(config, shards).write(staging.path(), CANDIDATES_MANIFEST)?;
    staging.commit()?;

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

fn add_to_run(run: &mut Run, row: &QueryCandidates) {
    let ranking = row.passage_ids.iter().zip(&row.scores);
    run.rankings
        .insert(row.query_id.clone(), ranking.map(|(id, &score)| ScoredDoc { doc_id: id.clone(), score }).collect());
}

pub fn threads(configured: usize) -> usize {
    if configured > 0 { configured } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// Retrieves for every query, in batches of `batch` queries, on `threads` threads that take
/// batches in turn; results in query order. The first error stops the work.
fn retrieve_all(
    retriever: &Retriever<'_, StudentModel>,
    queries: &[Query],
    batch: usize,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Vec<Retrieved>> {
    let batches: Vec<&[Query]> = queries.chunks(batch.max(1)).collect();
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Vec<Retrieved>>>> = Mutex::new(vec![None; batches.len()]);
    let failure: Mutex<Option<PipelineError>> = Mutex::new(None);
    progress.begin("retrieve", queries.len() as u64, Unit::Items);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(batches.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batches.len() || failure.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    if cancel.load(Ordering::Relaxed) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(PipelineError::Invalid("cancelled".into()));
                        }
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
                                f.get_or_insert(PipelineError::Context {
                                    message: format!("batch from query {first}"),
                                    source: Box::new(e.into()),
                                });
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
    let slots = slots.into_inner().map_err(|_| PipelineError::Invalid("a retrieval thread panicked".into()))?;
    let batches = slots.into_iter().collect::<Option<Vec<_>>>().context("a retrieval thread stopped early")?;
    Ok(batches.into_iter().flatten().collect())
}

/// Retrieves `queries` with `model` (batched, on `threads` threads) into a TREC run.
pub fn retrieve_run(
    retriever: &Retriever<'_, StudentModel>,
    index: &CorpusIndex,
    queries: &[Query],
    batch: usize,
    threads: usize,
) -> Result<Run> {
    let results = retrieve_all(retriever, queries, batch, threads, &NoProgress, &AtomicBool::new(false))?;
    let mut run = Run::default();
    for (query, retrieved) in queries.iter().zip(&results) {
        add_to_run(&mut run, &candidates_row(index, &query.id, retrieved));
    }
    Ok(run)
}

fn candidates_row(index: &CorpusIndex, query_id: &str, retrieved: &Retrieved) -> QueryCandidates {
    let ranking = &retrieved.ranking;
    let keys = ranking
        .keys
        .iter()
        .zip(&retrieved.key_sources)
        .map(|(key, source)| CandidateKey {
            tokens: key.tokens.clone(),
            source: source.name().to_string(),
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

/// Writes one candidate shard (temp + rename); returns its rows.
fn write_shard(path: &Path, rows: &[QueryCandidates], split: &str, n: usize) -> dgr_core::Result<u64> {
    let first = rows.first().map(|r| r.query_id.as_str()).unwrap_or_default();
    let last = rows.last().map(|r| r.query_id.as_str()).unwrap_or_default();
    let shard = n.to_string();
    let metadata =
        [("dgr.split", split), ("dgr.shard", shard.as_str()), ("dgr.first_query", first), ("dgr.last_query", last)];
    write_records(path, &metadata, rows.iter().cloned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
}

/// A retriever with `settings`' search and scoring over `model`, on the model's device.
pub(crate) fn retriever<'a>(
    settings: &RetrieveConfig,
    model: &'a StudentModel,
    tokenizer: &'a TextTokenizer,
    index: &'a CorpusIndex,
) -> Result<Retriever<'a, StudentModel>> {
    let (search, scoring) = (settings.search.clone(), settings.scoring.clone());
    Ok(Retriever::new(model, tokenizer, index, search, scoring, model.device())?)
}
