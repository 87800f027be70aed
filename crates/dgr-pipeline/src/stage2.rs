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
use dgr_trainer::checkpoint::RunIdentity;
use dgr_trainer::distill::{DistillData, DistillInputs, DistillObjective, Markers};
use tracing::info;

use crate::config::Config;
use crate::ranks::RankPlace;
use crate::training::{StageRun, file_checksum, run_stage, weights_checksum};

const SPLIT: &str = "train";

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
    let prepared = DistillData::new(&inputs, d)
        .with_context(|| format!("cannot build stage-2 training data from {}", rank_lists_dir.display()))?;
    let counts = prepared.counts.clone();
    info!(
        rank_lists = counts.queries,
        kept = counts.kept,
        no_positive = counts.no_positive,
        too_few_negatives = counts.too_few_negatives,
        already_separated = counts.already_separated,
        margin = d.loss.margin,
        step_margin = d.loss.step_margin,
        loss = ?d.loss.kind,
        "stage-2 training queries"
    );
    let out = config.job.stage2_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("queries.json"), format!("{}\n", serde_json::to_string_pretty(&counts)?).as_bytes())?;

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
    let identity = RunIdentity {
        fingerprint: [
            ("student".to_string(), student_sha256),
            ("candidates".to_string(), file_checksum(&candidates_dir.join(CANDIDATES_MANIFEST))?),
            ("rank_lists".to_string(), file_checksum(&rank_lists_dir.join(rank_lists::MANIFEST_FILE))?),
            ("index".to_string(), index.index_sha256.clone()),
            ("dataset".to_string(), file_checksum(&data.join(dgr_core::import::MANIFEST_FILE))?),
        ]
        .into(),
        settings: serde_json::to_value(d)?,
    };
    let run = StageRun { stage: "train-distill", engine: &d.engine, out_dir: &out, identity, fresh, place };
    run_stage(config, run, model, &model_config, &mut objective, progress)?;
    info!(out = %out.display(), "stage 2 done: weights/final, checkpoints/, train_log.jsonl, queries.json");
    Ok(())
}
