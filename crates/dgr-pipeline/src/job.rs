//! The job run (`dgr run`): every stage of the configured job in order — prepare, BM25, the
//! FM-index, stage 1, retrieval (dev/test and the train queries), the teacher, stage 2,
//! retrieval with the distilled student, evaluation. Each stage leaves a record
//! (`stage_record`) with the fingerprint of its inputs and settings, which chain: a stage
//! whose record matches and whose outputs are there is skipped, a changed stage reruns with
//! every stage that reads it, and a stage interrupted part-way resumes (training from its
//! newest checkpoint).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dgr_bm25::Bm25Index;
use dgr_core::import::DatasetManifest;
use dgr_core::progress::Progress;
use dgr_teacher::teacher::CandidateSource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use crate::config::Config;
use crate::error::{Context, Result, bail};
use crate::local::{Launcher, Program};
use crate::ranks::RankPlace;
use crate::results::{JobResults, SystemRun};
use crate::retrieve::{RetrieveTask, Student};
use crate::services::{ShardStage, TrainStage};
use crate::stage_record::{StageRecord, StageState};
use crate::training::weights_checksum;

/// `[run]`: how much of the data `dgr run` puts through the generative stages, so that a
/// job can be sized to the machine (the demo) without another dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Worker processes that compute the shard stages (retrieval, teacher) on this machine,
    /// beside their coordinator; 0 computes them in the `dgr run` process. Training runs as
    /// `ranks.world_size` rank processes when that is above 1.
    pub workers: usize,
    /// Train queries retrieved and scored by the teacher for stage 2 (their first N; 0 = all).
    pub train_queries: usize,
    /// Dev/test queries retrieved and evaluated, for every system alike (their first N; 0 = all).
    pub eval_queries: usize,
}

/// The stages `dgr run --until` may stop after, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Until {
    Prepare,
    Bm25,
    Index,
    TrainGen,
    Retrieve,
    Teacher,
    TrainDistill,
}

impl Until {
    pub const ALL: [Until; 7] = [
        Until::Prepare,
        Until::Bm25,
        Until::Index,
        Until::TrainGen,
        Until::Retrieve,
        Until::Teacher,
        Until::TrainDistill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Until::Prepare => "prepare",
            Until::Bm25 => "bm25",
            Until::Index => "index",
            Until::TrainGen => "train-gen",
            Until::Retrieve => "retrieve",
            Until::Teacher => "teacher",
            Until::TrainDistill => "train-distill",
        }
    }

    pub fn parse(name: &str) -> Result<Until> {
        Until::ALL.into_iter().find(|u| u.name() == name).with_context(|| {
            let names: Vec<&str> = Until::ALL.iter().map(|u| u.name()).collect();
            format!("`{name}` is not a stage of `dgr run` ({})", names.join(", "))
        })
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run every stage again, even those that are up to date.
    pub overwrite: bool,
    /// The last stage to run (evaluation follows it).
    pub until: Until,
    /// This program, to start workers and ranks with (`run.workers`, `ranks.world_size`);
    /// `None` computes everything in this process.
    pub program: Option<Program>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { overwrite: false, until: Until::TrainDistill, program: None }
    }
}

/// What became of a stage in this run.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutcome {
    pub stage: String,
    /// Seconds it ran; `None` when it was up to date.
    pub seconds: Option<f64>,
}

/// The job's results, and what each stage did.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub results: JobResults,
    pub stages: Vec<StageOutcome>,
}

/// Runs the configured job as `options` say.
pub fn run(config: &Config, options: &RunOptions, progress: &dyn Progress) -> Result<JobRun> {
    if options.until >= Until::TrainGen
        && (!config.retrieve.model.as_os_str().is_empty() || !config.train_distill.student.as_os_str().is_empty())
    {
        bail!(
            "`dgr run` trains its own students: leave retrieve.model and train_distill.student empty (they name \
             students for the single-stage commands)"
        );
    }
    if options.until >= Until::TrainDistill && config.teacher.candidates != CandidateSource::Gr {
        bail!(
            "stage 2 learns from the teacher's order of the student's own candidates: set teacher.candidates = \"gr\" \
             (or stop earlier with --until teacher)"
        );
    }
    let processes = config.run.workers > 0 || config.ranks.world_size > 1;
    let launcher = match (&options.program, processes) {
        (Some(program), true) => Some(Launcher::new(program.clone(), config)?),
        (None, true) => bail!("run.workers and ranks.world_size > 1 need the program to start them with"),
        _ => None,
    };
    let mut runner = Runner { config, overwrite: options.overwrite, stages: Vec::new(), launcher };
    let until = options.until;
    let data = config.job.data_dir();
    let r = &config.run;

    let prepare = runner.stage(
        "prepare",
        json!({"prepare": config.prepare, "input": file_identity(&config.prepare.input)?}),
        DatasetManifest::load(&data).is_ok(),
        |_| crate::prepare::prepare(config, &data, true, progress).map(|_| ()),
    )?;
    let manifest = DatasetManifest::load(&data)?;
    let splits = config.eval.splits.clone();
    for split in &splits {
        if manifest.file("queries", Some(split)).is_none() {
            bail!("eval.splits names split `{split}`, but {} has no queries for it", data.display());
        }
    }
    if until >= Until::Retrieve && splits.iter().any(|s| s == "train") {
        bail!(
            "eval.splits names `train`, whose candidates are stage 2's training data: evaluate the generative \
             stages on dev and test (or stop before them with --until train-gen)"
        );
    }
    let mut systems = Vec::new();
    let mut notes = Vec::new();
    if r.eval_queries > 0 {
        notes.push(format!("every system is evaluated on the first {} queries of each split", r.eval_queries));
    }

    // BM25: the baseline on the evaluated splits (and the teacher's candidates, when asked).
    let mut bm25_splits = splits.clone();
    if until >= Until::Teacher && config.teacher.candidates == CandidateSource::Bm25 {
        bm25_splits.push("train".to_string());
    }
    let bm25_run = |split: &str| config.job.runs_dir().join(format!("bm25-{split}.trec"));
    let bm25_dir = config.job.bm25_dir();
    let bm25 = runner.stage(
        "bm25",
        json!({
            "prepare": prepare,
            "top_k": config.bm25.top_k,
            "memory_mb": config.bm25.memory_mb,
            "splits": bm25_splits,
        }),
        Bm25Index::open(&bm25_dir).is_ok() && bm25_splits.iter().all(|s| bm25_run(s).is_file()),
        |_| {
            let corpus = data.join("corpus.arrow");
            crate::bm25::index(config, &corpus, &bm25_dir, progress)?;
            for split in &bm25_splits {
                let queries = data.join(format!("queries-{split}.arrow"));
                crate::bm25::search(config, &bm25_dir, &queries, &bm25_run(split), progress)?;
            }
            Ok(())
        },
    )?;
    systems.extend(splits.iter().map(|split| ("bm25", split.clone(), bm25_run(split), bm25.clone())));

    if until >= Until::Index {
        let index_dir = config.job.index_dir();
        let index = runner.stage(
            "index",
            json!({
                "prepare": prepare,
                "index": config.index,
                "tokenizer": file_identity(&config.index.tokenizer)?,
            }),
            dgr_index::store::read_manifest(&index_dir).is_ok(),
            |_| crate::index::build(config, &data.join("corpus.arrow"), &index_dir, progress).map(|_| ()),
        )?;

        let mut stage1 = None;
        if until >= Until::TrainGen {
            let t = &config.train_gen;
            stage1 = Some(runner.train(
                TrainStage::TrainGen,
                json!({
                    "prepare": prepare,
                    // Dev evaluations during training read the index.
                    "index": if t.engine.eval_every > 0 { Value::from(index.clone()) } else { Value::Null },
                    "init": weights_checksum(&t.init)?,
                    "tokenizer": file_identity(&t.tokenizer)?,
                    "settings": training_settings(serde_json::to_value(t)?),
                    "world_size": config.ranks.world_size,
                }),
                Student::Stage1.model_dir(config).join("model.safetensors").is_file(),
                progress,
            )?);
        }

        if let Some(stage1) = &stage1
            && until >= Until::Retrieve
        {
            systems.extend(runner.retrieve_eval(&splits, Student::Stage1, stage1, &index, progress)?);
            let train = RetrieveTask {
                split: "train".into(),
                student: Student::Stage1,
                limit: limit(r.train_queries),
                index_dir: None,
            };
            if r.train_queries > 0 {
                notes
                    .push(format!("stage 2 learns from the candidates of the first {} train queries", r.train_queries));
            }
            let candidates = runner.retrieve(&train, stage1, &index, progress)?;

            let mut teacher = None;
            if until >= Until::Teacher {
                let t = &config.teacher;
                let source = match t.candidates {
                    CandidateSource::Gr => candidates.clone(),
                    CandidateSource::Bm25 => bm25.clone(),
                };
                let out = crate::teacher::output_dir(config, "train");
                let inputs = json!({
                    "candidates": source,
                    "teacher": config.teacher,
                    "weights": t.weights_sha256().context("cannot read the teacher's weights")?,
                });
                let done = out.join(dgr_core::rank_lists::MANIFEST_FILE).is_file();
                let stage = ShardStage::Teacher { split: "train".into() };
                teacher = Some(runner.shards(&stage, inputs, done, progress)?);
            }

            if let Some(teacher) = &teacher
                && until >= Until::TrainDistill
            {
                let d = &config.train_distill;
                let stage2 = runner.train(
                    TrainStage::TrainDistill,
                    json!({
                        "student": stage1,
                        "candidates": candidates,
                        "rank_lists": teacher,
                        "index": index,
                        "scoring": config.retrieve.scoring,
                        "settings": training_settings(serde_json::to_value(d)?),
                        "world_size": config.ranks.world_size,
                    }),
                    Student::Stage2.model_dir(config).join("model.safetensors").is_file(),
                    progress,
                )?;
                systems.extend(runner.retrieve_eval(&splits, Student::Stage2, &stage2, &index, progress)?);
            }
        }
    }

    let runs: Vec<SystemRun> = systems
        .iter()
        .map(|(system, split, run, _)| SystemRun { system, split: split.clone(), run: run.clone() })
        .collect();
    let evaluated: Vec<Value> =
        systems.iter().map(|(system, split, _, fingerprint)| json!([system, split, fingerprint])).collect();
    let job_dir = config.job.dir.clone();
    runner.stage(
        "eval",
        json!({"runs": evaluated, "eval": config.eval, "eval_queries": r.eval_queries, "notes": notes}),
        JobResults::path(&job_dir).is_file() && job_dir.join("plots/results.png").is_file(),
        |_| {
            let results = crate::results::evaluate(
                &data,
                &manifest.source.to_string(),
                &runs,
                r.eval_queries,
                &config.eval.recall_at,
                notes.clone(),
            )?;
            results.write(&job_dir)?;
            let lines: Vec<Value> = results
                .rows
                .iter()
                .map(|row| {
                    json!({
                        "stage": "eval",
                        "system": row.system,
                        "dataset": results.dataset,
                        "split": row.split,
                        "kind": row.kind,
                        "queries": row.queries,
                        "metrics": row.metrics,
                    })
                })
                .collect();
            crate::metrics::append_metrics(&job_dir.join("metrics.jsonl"), &lines)?;
            crate::plots::draw(&job_dir, &results).map(|_| ())
        },
    )?;
    Ok(JobRun { results: JobResults::load(&job_dir)?, stages: runner.stages })
}

fn limit(queries: usize) -> Option<usize> {
    (queries > 0).then_some(queries)
}

/// A training section's settings without those that do not change the trained weights
/// (checkpoint cadence, dev evaluations).
fn training_settings(mut settings: Value) -> Value {
    if let Some(engine) = settings.get_mut("engine").and_then(Value::as_object_mut) {
        for key in ["checkpoint_every", "keep_checkpoints", "eval_every", "eval_queries"] {
            engine.remove(key);
        }
    }
    settings
}

/// What identifies an outside input cheaply: its path, size and modification time (a file),
/// or those of every file in it (a directory).
fn file_identity(path: &Path) -> Result<Value> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let stamp = |meta: &std::fs::Metadata| {
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        json!([meta.len(), modified.map_or(0, |d| d.as_nanos() as u64)])
    };
    if meta.is_file() {
        return Ok(json!({"path": path, "stamp": stamp(&meta)}));
    }
    let mut files: Vec<(PathBuf, Value)> = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                files.push((entry.path(), stamp(&meta)));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(json!({"path": path, "files": files}))
}

/// How a stage's work starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Its inputs or settings changed since it last started (or `--overwrite`): whatever it
    /// left is discarded.
    Over,
    /// It was interrupted with today's inputs and settings: it continues where it was.
    Continue,
    /// It never ran in this job: a training stage still resumes from checkpoints of the same
    /// inputs (say, of `dgr train-gen` run by hand).
    New,
}

struct Runner<'a> {
    config: &'a Config,
    overwrite: bool,
    stages: Vec<StageOutcome>,
    /// Starts workers and ranks, when the job has them.
    launcher: Option<Launcher>,
}

impl Runner<'_> {
    /// Runs `work` unless the stage is up to date; returns the stage's fingerprint, which the
    /// stages after it put in theirs. `work` is told how to start.
    fn stage(
        &mut self,
        name: &str,
        inputs: Value,
        outputs_present: bool,
        work: impl FnOnce(Start) -> Result<()>,
    ) -> Result<String> {
        let job_dir = self.config.job.dir.clone();
        let record = StageRecord::started(name, inputs);
        let fingerprint = record.fingerprint.clone();
        let previous = StageRecord::load(&job_dir, name)?;
        let same = previous.as_ref().is_some_and(|p| p.fingerprint == fingerprint);
        if !self.overwrite && same && outputs_present && previous.as_ref().is_some_and(|p| p.state == StageState::Done)
        {
            info!("stage {name}: up to date");
            self.stages.push(StageOutcome { stage: name.to_string(), seconds: None });
            return Ok(fingerprint);
        }
        let start = match &previous {
            _ if self.overwrite => Start::Over,
            Some(_) if !same => Start::Over,
            Some(p) if p.state == StageState::Running => Start::Continue,
            Some(_) => Start::Over,
            None => Start::New,
        };
        match &previous {
            Some(_) if !same => info!("stage {name}: inputs or settings changed since it last ran: running it again"),
            Some(p) if p.state == StageState::Running => info!("stage {name}: interrupted before: continuing it"),
            _ => info!("stage {name}: running"),
        }
        record.write(&job_dir)?;
        let started = Instant::now();
        work(start).with_context(|| format!("stage {name}"))?;
        let seconds = started.elapsed().as_secs_f64();
        record.done(seconds).write(&job_dir)?;
        info!("stage {name}: done in {seconds:.1} s");
        self.stages.push(StageOutcome { stage: name.to_string(), seconds: Some(seconds) });
        Ok(fingerprint)
    }

    /// Generative retrieval of `task` by a student whose training stage has `student`'s
    /// fingerprint, over the index of `index`'s.
    fn retrieve(&mut self, task: &RetrieveTask, student: &str, index: &str, progress: &dyn Progress) -> Result<String> {
        let config = self.config;
        let mut settings = serde_json::to_value(&config.retrieve)?;
        if let Some(object) = settings.as_object_mut() {
            object.remove("threads");
        }
        let done = task.candidates_dir(config).join(dgr_core::candidates::CANDIDATES_MANIFEST).is_file()
            && task.run_path(config).is_file();
        let inputs =
            json!({"student": student, "index": index, "split": task.split, "limit": task.limit, "retrieve": settings});
        self.shards(&ShardStage::Retrieve(task.clone()), inputs, done, progress)
    }

    /// Retrieval of the first `run.eval_queries` queries of each eval split by `student`,
    /// whose training stage has the fingerprint `trained`: the systems to evaluate.
    fn retrieve_eval(
        &mut self,
        splits: &[String],
        student: Student,
        trained: &str,
        index: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<(&'static str, String, PathBuf, String)>> {
        let mut systems = Vec::new();
        for split in splits {
            let task = RetrieveTask {
                split: split.clone(),
                student,
                limit: limit(self.config.run.eval_queries),
                index_dir: None,
            };
            let fingerprint = self.retrieve(&task, trained, index, progress)?;
            systems.push((student.name(), split.clone(), task.run_path(self.config), fingerprint));
        }
        Ok(systems)
    }

    /// A shard stage: on the launcher's coordinator and workers when there are workers
    /// (an interrupted job continues from its ledger), else in this process.
    fn shards(&mut self, stage: &ShardStage, inputs: Value, done: bool, progress: &dyn Progress) -> Result<String> {
        let config = self.config;
        let launcher = self.launcher.take();
        let result = self.stage(&stage.label(), inputs, done, |start| match (&launcher, config.run.workers) {
            (Some(launcher), workers) if workers > 0 => {
                // Only a ledger of this very stage's interrupted run is continued.
                let overwrite = start != Start::Continue || !stage.ledger_path(config).is_file();
                launcher.shard_stage(stage, workers, overwrite, progress)
            }
            _ => match stage {
                ShardStage::Retrieve(task) => crate::retrieve::retrieve_split(config, task, progress),
                ShardStage::Teacher { split } => crate::teacher::score_split(config, split, progress),
            },
        });
        self.launcher = launcher;
        result
    }

    /// A training stage: as `ranks.world_size` rank processes when above 1, else in this
    /// process.
    fn train(&mut self, stage: TrainStage, inputs: Value, done: bool, progress: &dyn Progress) -> Result<String> {
        let config = self.config;
        let launcher = self.launcher.take();
        let result = self.stage(stage.name(), inputs, done, |start| match &launcher {
            Some(launcher) if config.ranks.world_size > 1 => {
                let steps = match stage {
                    TrainStage::TrainGen => config.train_gen.engine.steps,
                    TrainStage::TrainDistill => config.train_distill.engine.steps,
                };
                launcher.training(stage, config.ranks.world_size, start == Start::Over, steps, progress)
            }
            _ => {
                let fresh = start == Start::Over;
                match stage {
                    TrainStage::TrainGen => crate::stage1::train_gen(config, fresh, &RankPlace::default(), progress),
                    TrainStage::TrainDistill => {
                        crate::stage2::train_distill(config, fresh, &RankPlace::default(), progress)
                    }
                }
            }
        });
        self.launcher = launcher;
        result
    }
}

/// Where a stage of the job stands, for `dgr status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub state: StageState,
    pub started_unix_s: u64,
    /// Wall time of the run that finished it.
    pub seconds: Option<f64>,
    /// A training stage's last logged step and its steps in all.
    pub steps: Option<(u64, u64)>,
}

/// Every stage `dgr run` has started in the job, in the order they started.
pub fn status(config: &Config) -> Result<Vec<StageStatus>> {
    let mut records = StageRecord::load_all(&config.job.dir)?;
    records.sort_by_key(|r| r.started_unix_s);
    Ok(records
        .into_iter()
        .map(|record| {
            let training = match record.stage.as_str() {
                "train-gen" => Some((config.job.stage1_dir(), config.train_gen.engine.steps)),
                "train-distill" => Some((config.job.stage2_dir(), config.train_distill.engine.steps)),
                _ => None,
            };
            let steps = training.map(|(dir, total)| (last_step(&dir.join("train_log.jsonl")), total));
            StageStatus {
                stage: record.stage,
                state: record.state,
                started_unix_s: record.started_unix_s,
                seconds: record.seconds,
                steps,
            }
        })
        .collect())
}

/// The step of a step log's last line (0 for none).
fn last_step(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rev().find_map(|line| serde_json::from_str::<Value>(line).ok()?.get("step")?.as_u64()).unwrap_or(0)
}
