//! The teacher stage (method §3): [`score_split`] ranks a split's candidate lists in this
//! process; [`import`] turns teacher scores computed elsewhere into the same rank-list shards.
//! The distributed form of scoring (`dgr coordinator --role teacher` with `dgr worker --role
//! teacher`) shares [`TeacherInputs`] and [`TeacherWork`] with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::config::Config;
use crate::error::{Context, Result, bail};
use dgr_coordinator::api::ShardSpec;
use dgr_coordinator::ledger::JobSpec;
use dgr_coordinator::worker::ShardWork;
use dgr_core::progress::Progress;
use dgr_core::rank_lists::MANIFEST_FILE;
use dgr_core::shards::shard_ranges;
use dgr_teacher::candidates::{CandidateSet, Dataset};
use dgr_teacher::import::{read_dgr_jsonl, read_score_tsv};
use dgr_teacher::shards::{Provenance, score_range, score_set, write_set, write_shard};
use dgr_teacher::teacher::{CandidateSource, Teacher, TeacherConfig};
use tracing::info;

/// Formats of teacher scores made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// DGR's JSONL: per query, the candidates with a `score_teacher_*` field.
    DgrJsonl,
    /// `qid pid score` lines.
    Tsv,
}

/// Teacher scores to import into rank-list shards.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub format: ImportFormat,
    /// The file of teacher scores.
    pub input: PathBuf,
    /// Split the queries belong to.
    pub split: String,
    /// DGR JSONL: the context field holding the teacher's score (default: the only
    /// `score_teacher_*` field).
    pub score_field: Option<String>,
    /// Name recorded as the teacher (default: `imported from <input>`).
    pub teacher: Option<String>,
}

/// The rank-list directory of a split.
pub fn output_dir(config: &Config, split: &str) -> PathBuf {
    config.job.rank_lists_dir().join(split)
}

/// What the teacher stage reads, and the fingerprint that ties coordinator and workers to the
/// same inputs and settings.
pub struct TeacherInputs {
    pub spec: TeacherConfig,
    pub dataset: Dataset,
    pub candidates: CandidateSet,
    pub provenance: Provenance,
    pub fingerprint: String,
}

impl TeacherInputs {
    pub fn load(config: &Config, split: &str) -> Result<Self> {
        let t = &config.teacher;
        let spec = t.clone();
        let data = config.job.data_dir();
        let dataset = Dataset::load(&data, split)
            .with_context(|| format!("cannot read split `{split}` of the dataset in {}", data.display()))?;
        let candidates = match t.candidates {
            CandidateSource::Gr => {
                let dir = config.job.candidates_dir().join(split);
                CandidateSet::from_gr(&dir, split, t.depth).with_context(|| {
                    format!("no generative-retrieval candidates for `{split}` (run `dgr retrieve --split {split}`)")
                })?
            }
            CandidateSource::Bm25 => {
                let run = config.job.runs_dir().join(format!("bm25-{split}.trec"));
                if !run.is_file() {
                    bail!("{} does not exist (run `dgr bm25 search --split {split}`)", run.display());
                }
                CandidateSet::from_run(&run, &dataset.queries, split, t.depth)?
            }
        };
        if candidates.is_empty() {
            bail!("the candidate set of `{split}` is empty");
        }
        let teacher_sha256 = spec.weights_sha256().context("cannot read the teacher's weights")?;
        let provenance = Provenance {
            teacher: spec.name(),
            teacher_sha256: teacher_sha256.clone(),
            candidate_source: candidates.source.clone(),
            split: split.to_string(),
        };
        let fingerprint = format!(
            "teacher {} sha256 {teacher_sha256}; prefixes {:?} {:?}; max_tokens {} ({:?}); candidates {}; depth {}; \
             shard_queries {}",
            spec.name(),
            spec.query_prefix,
            spec.passage_prefix,
            spec.max_tokens,
            t.overlong,
            candidates.source,
            t.depth,
            t.shard_queries,
        );
        Ok(TeacherInputs { spec, dataset, candidates, provenance, fingerprint })
    }

    /// Writes the manifest of a set whose shards are all in place in `out`.
    pub fn finish(&self, out: &Path, shards: Vec<dgr_core::shards::ShardEntry>) -> Result<()> {
        self.provenance.manifest(shards).write(out, MANIFEST_FILE)?;
        Ok(())
    }

    /// The job a coordinator runs for these inputs.
    pub fn job(&self, config: &Config, split: &str) -> JobSpec {
        let shards = shard_ranges(self.candidates.len(), config.teacher.shard_queries)
            .into_iter()
            .map(|(first, end)| (first as u64, (end - first) as u64))
            .collect();
        JobSpec {
            stage: "teacher".into(),
            split: split.to_string(),
            shards,
            output_dir: output_dir(config, split),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Scores a split's candidate lists in this process into its rank-list set.
pub fn score_split(config: &Config, split: &str, progress: &dyn Progress) -> Result<()> {
    let TeacherWork { teacher, inputs } = TeacherWork::load(config, split)?;
    let out = output_dir(config, split);
    let started = std::time::Instant::now();
    let pairs = inputs.candidates.pairs(0, inputs.candidates.len());
    let manifest =
        score_set(&teacher, &inputs.dataset, &inputs.candidates, config.teacher.shard_queries, &out, progress)?;
    let seconds = started.elapsed().as_secs_f64();
    info!(
        queries = manifest.queries,
        pairs,
        shards = manifest.shards.len(),
        seconds = format!("{seconds:.1}"),
        pairs_per_second = format!("{:.1}", pairs as f64 / seconds),
        out = %out.display(),
        "teacher scores written"
    );
    Ok(())
}

/// Turns teacher scores made elsewhere into the split's rank-list set.
pub fn import(config: &Config, args: &ImportRequest) -> Result<()> {
    let data = config.job.data_dir();
    let dataset = Dataset::load(&data, &args.split)
        .with_context(|| format!("cannot read split `{}` of the dataset in {}", args.split, data.display()))?;
    let rows = match args.format {
        ImportFormat::DgrJsonl => read_dgr_jsonl(&args.input, &dataset, &args.split, args.score_field.as_deref())?,
        ImportFormat::Tsv => read_score_tsv(&args.input, &dataset)?,
    };
    if rows.is_empty() {
        bail!("{} holds no teacher scores", args.input.display());
    }
    let (_, sha) = dgr_core::import::sha256_file(&args.input)?;
    let provenance = Provenance {
        teacher: args.teacher.clone().unwrap_or_else(|| format!("imported from {}", args.input.display())),
        teacher_sha256: String::new(),
        candidate_source: format!("import:{} (sha256 {sha})", args.input.display()),
        split: args.split.clone(),
    };
    let out = output_dir(config, &args.split);
    let queries = rows.len();
    let pairs: usize = rows.iter().map(|r| r.passage_ids.len()).sum();
    let manifest = write_set(&out, &provenance, rows, config.teacher.shard_queries)?;
    info!(queries, pairs, shards = manifest.shards.len(), out = %out.display(), "teacher scores imported");
    Ok(())
}

/// A worker's teacher: scores leased query ranges into rank-list shards.
pub struct TeacherWork {
    teacher: Teacher,
    inputs: TeacherInputs,
}

impl TeacherWork {
    pub fn load(config: &Config, split: &str) -> Result<Self> {
        let inputs = TeacherInputs::load(config, split)?;
        let teacher = Teacher::load(inputs.spec.clone(), config.device.select(0)?)
            .with_context(|| format!("cannot load the teacher from {}", inputs.spec.model.display()))?;
        Ok(TeacherWork { teacher, inputs })
    }
}

impl ShardWork for TeacherWork {
    fn fingerprint(&self) -> &str {
        &self.inputs.fingerprint
    }

    fn compute(&self, shard: ShardSpec, path: &Path, cancel: &AtomicBool) -> Result<u64, String> {
        let (first, end) = (shard.first as usize, (shard.first + shard.count) as usize);
        let i = &self.inputs;
        let rows =
            score_range(&self.teacher, &i.dataset, &i.candidates, first, end, cancel).map_err(|e| e.to_string())?;
        let entry = write_shard(path, rows, &i.provenance, shard.id as usize, first).map_err(|e| e.to_string())?;
        Ok(entry.queries)
    }
}
