//! Stage 1 (`dgr train-gen`): the student learns to generate identifiers (method §1).

use std::collections::{BTreeMap, HashSet};

use crate::error::{Context, Result, bail};
use dgr_core::arrow_file::{RowReader, read_records};
use dgr_core::import::DatasetManifest;
use dgr_core::progress::Progress;
use dgr_core::trec::read_qrels;
use dgr_core::{Passage, Query};
use dgr_model::student::Student;
use dgr_model::tokenizer::TextTokenizer;
use dgr_trainer::checkpoint::RunIdentity;
use dgr_trainer::pair_space::{CorpusScan, PairSpace, StreamedPairs};
use dgr_trainer::pairs::PairConfig;
use dgr_trainer::stage1::GenerationObjective;
use tracing::{info, warn};

use crate::config::Config;
use crate::ranks::RankPlace;
use crate::training::{StageRun, file_checksum, run_stage, weights_checksum};

/// The rule stage-1 pairs are numbered and drawn by ([`dgr_trainer::pair_space`]), part of a
/// run's identity.
const PAIR_SAMPLING: &str = "units of slots, pair i drawn from (seed, i)";

/// Trains stage 1 as the configuration says, alone or as one rank of `place`'s job, resuming
/// from the newest checkpoint unless `fresh`.
pub fn train_gen(config: &Config, fresh: bool, place: &RankPlace, progress: &dyn Progress) -> Result<()> {
    let t = &config.train_gen;
    let data = config.job.data_dir();
    let manifest = DatasetManifest::load(&data).context("run `dgr prepare` first")?;
    if manifest.file("qrels", Some("train")).is_none() {
        bail!("{} has no judged train split: stage 1 needs train queries with qrels", data.display());
    }
    let queries: Vec<Query> = read_records(&data.join("queries-train.arrow"))?;
    let qrels = read_qrels(&data.join("qrels-train.tsv"))?;
    let relevant: BTreeMap<&str, Vec<String>> = qrels
        .judgments
        .iter()
        .map(|(q, docs)| (q.as_str(), docs.iter().filter(|(_, r)| **r > 0).map(|(d, _)| d.clone()).collect()))
        .collect();
    let judged: Vec<(String, Vec<String>)> =
        queries.iter().filter_map(|q| relevant.get(q.id.as_str()).map(|docs| (q.text.clone(), docs.clone()))).collect();
    let wanted: HashSet<&str> = judged.iter().flat_map(|(_, docs)| docs.iter().map(String::as_str)).collect();
    // One pass over the corpus; its passages are then read by row as steps draw them.
    let corpus_path = data.join("corpus.arrow");
    let scan = CorpusScan::read(&corpus_path, &wanted)?;
    let corpus = RowReader::<Passage>::open(&corpus_path, &scan.batch_rows)?;
    let pair_config = PairConfig { seed: t.engine.seed, ..t.pairs.clone() };
    let passages = scan.shapes.len();
    let (space, unknown) = PairSpace::new(pair_config, judged, scan);
    if !unknown.is_empty() {
        warn!(count = unknown.len(), "judged passages missing from the corpus were left out");
    }
    info!(
        pairs = space.pairs(),
        judged = space.judged_units(),
        passages,
        "stage-1 training pairs, each drawn when a step takes it"
    );

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
    let pairs = StreamedPairs { space, corpus };
    let mut objective = GenerationObjective::new(pairs, source_tokenizer, target_tokenizer, pad, t.label_smoothing);
    let identity = RunIdentity {
        fingerprint: [
            ("init".to_string(), weights_checksum(&t.init)?),
            ("dataset".to_string(), file_checksum(&data.join(dgr_core::import::MANIFEST_FILE))?),
            ("tokenizer".to_string(), file_checksum(&t.tokenizer)?),
            // How pairs are numbered and drawn: checkpoints of another rule would not resume exactly.
            ("pairs".to_string(), PAIR_SAMPLING.to_string()),
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
