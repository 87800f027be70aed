//! Stage 1 (`dgr train-gen`): the student learns to generate identifiers (method §1).

use std::collections::BTreeMap;

use crate::error::{Context, Result, bail};
use dgr_core::arrow_file::read_records;
use dgr_core::import::DatasetManifest;
use dgr_core::progress::Progress;
use dgr_core::trec::read_qrels;
use dgr_core::{Passage, Query};
use dgr_model::student::Student;
use dgr_model::tokenizer::TextTokenizer;
use dgr_trainer::checkpoint::RunIdentity;
use dgr_trainer::pairs::{PairConfig, build_pairs};
use dgr_trainer::stage1::GenerationObjective;
use tracing::{info, warn};

use crate::config::Config;
use crate::ranks::RankPlace;
use crate::training::{StageRun, file_checksum, run_stage, weights_checksum};

/// Trains stage 1 as the configuration says, alone or as one rank of `place`'s job, resuming
/// from the newest checkpoint unless `fresh`.
pub fn train_gen(config: &Config, fresh: bool, place: &RankPlace, progress: &dyn Progress) -> Result<()> {
    let t = &config.train_gen;
    let data = config.job.data_dir();
    let manifest = DatasetManifest::load(&data).context("run `dgr prepare` first")?;
    if manifest.file("qrels", Some("train")).is_none() {
        bail!("{} has no judged train split: stage 1 needs train queries with qrels", data.display());
    }
    let corpus: Vec<Passage> = read_records(&data.join("corpus.arrow"))?;
    let queries: Vec<Query> = read_records(&data.join("queries-train.arrow"))?;
    let qrels = read_qrels(&data.join("qrels-train.tsv"))?;
    let relevant: BTreeMap<&str, Vec<&str>> = qrels
        .judgments
        .iter()
        .map(|(q, docs)| (q.as_str(), docs.iter().filter(|(_, r)| **r > 0).map(|(d, _)| d.as_str()).collect()))
        .collect();
    let judged = queries.iter().filter_map(|q| relevant.get(q.id.as_str()).map(|docs| (q, docs.clone())));
    let pair_config = PairConfig { seed: t.engine.seed, ..t.pairs.clone() };
    let (pairs, unknown) = build_pairs(&corpus, judged, &pair_config);
    if !unknown.is_empty() {
        warn!(count = unknown.len(), "judged passages missing from the corpus were left out");
    }
    info!(pairs = pairs.len(), "built stage-1 training pairs");

    let source_tokenizer = TextTokenizer::from_file(&t.tokenizer, t.max_source_tokens)?.with_overlong(t.overlong);
    let target_tokenizer = TextTokenizer::from_file(&t.tokenizer, t.max_target_tokens)?.with_overlong(t.overlong);
    let device = config.device.select(place.local_rank as usize)?.autodiff();
    device.seed(t.engine.seed);
    let (model, model_config) = Student::load_or_warm_start(&t.init, &source_tokenizer, &device)
        .with_context(|| format!("cannot start the student from {}", t.init.display()))?;
    let positions = model_config.max_positions();
    if t.max_source_tokens.max(t.max_target_tokens) > positions {
        bail!(
            "train_gen.max_source_tokens / max_target_tokens ({} / {}) exceed the model's {positions} positions",
            t.max_source_tokens,
            t.max_target_tokens
        );
    }

    let pad = model_config.pad_token_id();
    let mut objective = GenerationObjective::new(&pairs, &source_tokenizer, &target_tokenizer, pad, t.label_smoothing)?;
    let identity = RunIdentity {
        fingerprint: [
            ("init".to_string(), weights_checksum(&t.init)?),
            ("dataset".to_string(), file_checksum(&data.join(dgr_core::import::MANIFEST_FILE))?),
            ("tokenizer".to_string(), file_checksum(&t.tokenizer)?),
        ]
        .into(),
        settings: serde_json::to_value(t)?,
    };
    let out = config.job.stage1_dir();
    let run = StageRun { stage: "train-gen", engine: &t.engine, out_dir: &out, identity, fresh, place };
    run_stage(config, run, model, &model_config, &mut objective, progress)?;
    info!(out = %out.display(), "stage 1 done: weights/final, checkpoints/, train_log.jsonl");
    Ok(())
}
