//! Stage 2, DGR (`dgr train-distill`, method §4–5): the stage-1 student learns to order the
//! train queries' candidates as the teacher does; writes `<job.dir>/stage2/`.

use std::path::Path;

use crate::error::{Context, Result, bail};
use dgr_core::Passage;
use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::atomic::write_atomic;
use dgr_core::candidates::{CANDIDATES_FORMAT, CANDIDATES_MANIFEST, CANDIDATES_VERSION, QueryCandidates};
use dgr_core::import::DatasetManifest;
use dgr_core::progress::Progress;
use dgr_core::rank_lists::{self, RankList};
use dgr_core::shards::{ShardManifest, read_shard_set};
use dgr_core::views::PSEUDO_QUERY_MARK;
use dgr_index::store::read_manifest;
use dgr_model::student::Student;
use dgr_model::tokenizer::{Overlong, TextTokenizer};
use dgr_trainer::checkpoint::{RunIdentity, latest_state};
use dgr_trainer::distill::{DistillData, DistillInputs, DistillObjective, Markers};
use dgr_trainer::rank_loss::RankLoss;
use tracing::info;

use crate::config::Config;
use crate::ranks::RankPlace;
use crate::training::{StageRun, file_checksum, run_stage, weights_checksum};

const SPLIT: &str = "train";
/// The key of a run's settings (in its checkpoints) that holds the loss it trains with.
const RESOLVED_LOSS: &str = "resolved_loss";

/// The loss a resumable run of these inputs stored in its newest checkpoint, if there is one.
fn stored_loss(out: &Path, fingerprint: &std::collections::BTreeMap<String, String>) -> Option<RankLoss> {
    let state = latest_state(&out.join("checkpoints"))?;
    if &state.identity.fingerprint != fingerprint {
        return None;
    }
    serde_json::from_value(state.identity.settings.get(RESOLVED_LOSS)?.clone()).ok()
}

/// A shard set's manifest, made for the train split.
fn open_set(dir: &Path, name: &str, format: &str, version: u32, hint: &str) -> Result<ShardManifest> {
    let manifest = ShardManifest::open(dir, name, format, version)
        .with_context(|| format!("cannot open {} ({hint})", dir.display()))?;
    if manifest.split != SPLIT {
        bail!("{}: made for split `{}`, stage 2 trains on `{SPLIT}`", dir.join(name).display(), manifest.split);
    }
    Ok(manifest)
}

/// Trains stage 2 as the configuration says, alone or as one rank of `place`'s job, resuming
/// from the newest checkpoint unless `fresh`.
pub fn train_distill(config: &Config, fresh: bool, place: &RankPlace, progress: &dyn Progress) -> Result<()> {
    let d = &config.train_distill;
    let data = config.job.data_dir();
    let manifest = DatasetManifest::load(&data).context("run `dgr prepare` first")?;
    if manifest.file("queries", Some(SPLIT)).is_none() || manifest.file("qrels", Some(SPLIT)).is_none() {
        bail!("{} has no judged {SPLIT} queries: stage 2 trains on them", data.display());
    }
    let corpus: Vec<Passage> = read_records(&data.join("corpus.arrow"))?;
    let queries: Vec<Query> = read_records(&data.join(format!("queries-{SPLIT}.arrow")))?;
    if queries.is_empty() {
        bail!("{} has no judged {SPLIT} queries: stage 2 trains on them", data.display());
    }

    let student = config.job.student_or_stage1(&d.student);
    let student_sha256 = weights_checksum(&student)
        .with_context(|| format!("no stage-1 student in {} (train one with `dgr train-gen`)", student.display()))?;
    let index_dir = config.job.index_dir();
    let index = read_manifest(&index_dir).context("cannot open the FM-index (build it with `dgr index build`)")?;

    let candidates_dir = config.job.candidates_dir().join(SPLIT);
    let candidates_set = open_set(
        &candidates_dir,
        CANDIDATES_MANIFEST,
        CANDIDATES_FORMAT,
        CANDIDATES_VERSION,
        "retrieve candidates for the train queries with `dgr retrieve --split train`",
    )?;
    let provenance = |key: &str| candidates_set.provenance.get(key).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(made_with) = provenance("model_sha256")
        && made_with != student_sha256
    {
        bail!(
            "{}: the candidates were retrieved with another student (weights sha256 {made_with}) than {} \
             (sha256 {student_sha256}); retrieve them again with this student",
            candidates_dir.display(),
            student.display()
        );
    }
    if let Some(made_with) = provenance("index_sha256")
        && made_with != index.index_sha256
    {
        bail!(
            "{}: the candidates were retrieved over another FM-index than {}",
            candidates_dir.display(),
            index_dir.display()
        );
    }
    let rank_lists_dir = config.job.rank_lists_dir().join(SPLIT);
    let rank_set = open_set(
        &rank_lists_dir,
        rank_lists::MANIFEST_FILE,
        rank_lists::SET_FORMAT,
        rank_lists::SET_VERSION,
        "score the train candidates with `dgr teacher score` (teacher.candidates = \"gr\")",
    )?;
    let candidates: Vec<QueryCandidates> = read_shard_set(&candidates_dir, &candidates_set)?;
    let rank_lists: Vec<RankList> = read_shard_set(&rank_lists_dir, &rank_set)?;
    info!(candidates = candidates.len(), rank_lists = rank_lists.len(), "read the train candidates and rank lists");

    let source_tokenizer =
        TextTokenizer::from_file(&config.index.tokenizer, d.max_source_tokens)?.with_overlong(Overlong::Truncate);
    let target_tokenizer =
        TextTokenizer::from_file(&config.index.tokenizer, d.max_target_tokens)?.with_overlong(Overlong::Truncate);
    let markers = Markers { pseudo_query: source_tokenizer.tokens(vec![PSEUDO_QUERY_MARK.to_string()])?.remove(0) };
    let inputs = DistillInputs {
        queries: &queries,
        corpus: &corpus,
        candidates: &candidates,
        rank_lists: &rank_lists,
        markers: &markers,
        scoring: &config.retrieve.scoring,
        total_tokens: index.tokens,
    };
    let out = config.job.stage2_dir();
    let fingerprint: std::collections::BTreeMap<String, String> = [
        ("student".to_string(), student_sha256),
        ("candidates".to_string(), file_checksum(&candidates_dir.join(CANDIDATES_MANIFEST))?),
        ("rank_lists".to_string(), file_checksum(&rank_lists_dir.join(rank_lists::MANIFEST_FILE))?),
        ("index".to_string(), index.index_sha256.clone()),
        ("dataset".to_string(), file_checksum(&data.join(dgr_core::import::MANIFEST_FILE))?),
    ]
    .into();
    // A run that resumes keeps the scales its first step measured.
    let stored = if fresh { None } else { stored_loss(&out, &fingerprint) };
    let prepared = DistillData::new(&inputs, d, stored.as_ref())
        .with_context(|| format!("cannot build stage-2 training data from {}", rank_lists_dir.display()))?;
    let counts = prepared.counts.clone();
    let loss = prepared.loss.clone();
    info!(
        rank_lists = counts.queries,
        kept = counts.kept,
        no_positive = counts.no_positive,
        too_few_negatives = counts.too_few_negatives,
        already_separated = counts.already_separated,
        "stage-2 training queries"
    );
    info!(
        loss = ?loss.kind,
        margin = loss.margin,
        step_margin = loss.step_margin,
        student_temperature = loss.student_temperature,
        teacher_temperature = loss.teacher_temperature,
        scales = ?prepared.scale_source,
        "stage-2 ranking loss"
    );
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let report = serde_json::json!({
        "format": "dgr.stage2-queries",
        "version": 1,
        "counts": counts,
        "loss": loss,
        "scales": prepared.scale_source,
    });
    write_atomic(&out.join("queries.json"), format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes())?;

    let device = config.device.select(place.local_rank as usize)?.autodiff();
    device.seed(d.engine.seed);
    let (model, model_config) = Student::load(&student, &device)
        .with_context(|| format!("cannot load the stage-1 student from {}", student.display()))?;
    let mut objective = DistillObjective {
        data: prepared,
        source_tokenizer: &source_tokenizer,
        target_tokenizer: &target_tokenizer,
        pad: model_config.pad_token_id(),
        settings: d.clone(),
    };
    let mut settings = serde_json::to_value(d)?;
    if let Some(object) = settings.as_object_mut() {
        object.insert(RESOLVED_LOSS.to_string(), serde_json::to_value(&loss)?);
    }
    let identity = RunIdentity { fingerprint, settings };
    let run = StageRun { stage: "train-distill", engine: &d.engine, out_dir: &out, identity, fresh, place };
    run_stage(config, run, model, &model_config, &mut objective, progress)?;
    info!(out = %out.display(), "stage 2 done: weights/final, checkpoints/, train_log.jsonl, queries.json");
    Ok(())
}
