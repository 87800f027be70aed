//! `dgr train-gen`: stage 1, the student learns to generate identifiers (method §1).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use burn::tensor::Device;
use dgr_core::arrow_file::read_records;
use dgr_core::config::{self, Config};
use dgr_core::import::DatasetManifest;
use dgr_core::progress::{Progress, Unit};
use dgr_core::trec::read_qrels;
use dgr_core::{Passage, Query};
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::tokenizer::{Overlong, TextTokenizer};
use dgr_trainer::pairs::{PairConfig, build_pairs};
use dgr_trainer::stage1::{Stage1Config, train_stage1};
use figment::Figment;
use tracing::{info, warn};

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Optimisation steps (default: train_gen.steps).
    #[arg(long)]
    steps: Option<usize>,
    /// Pairs per step (default: train_gen.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(steps) = self.steps {
            figment = figment.merge(("train_gen.steps", steps));
        }
        if let Some(batch_size) = self.batch_size {
            figment = figment.merge(("train_gen.batch_size", batch_size));
        }
        figment
    }
}

/// BERT's `[CLS]` starts the decoder and `[PAD]` pads, as in HF BERT2BERT recipes.
const DECODER_START: &str = "[CLS]";
const PAD: &str = "[PAD]";

pub fn run(config: &Config) -> anyhow::Result<()> {
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
    let pair_config = PairConfig {
        titles: t.pairs.titles,
        spans: t.pairs.spans,
        pseudo_queries: t.pairs.pseudo_queries,
        span_words: t.pairs.span_words,
        unsupervised: t.pairs.unsupervised,
        seed: t.seed,
        ..PairConfig::default()
    };
    let (pairs, unknown) = build_pairs(&corpus, judged, &pair_config);
    if !unknown.is_empty() {
        warn!(count = unknown.len(), "judged passages missing from the corpus were left out");
    }
    info!(pairs = pairs.len(), "built stage-1 training pairs");

    let overlong = match t.overlong {
        config::Overlong::Truncate => Overlong::Truncate,
        config::Overlong::Error => Overlong::Error,
    };
    let source_tokenizer = TextTokenizer::from_file(&t.tokenizer, t.max_source_tokens)?.with_overlong(overlong);
    let target_tokenizer = TextTokenizer::from_file(&t.tokenizer, t.max_target_tokens)?.with_overlong(overlong);
    let special = |token: &str| {
        source_tokenizer.token_id(token).with_context(|| format!("{} has no {token} token", t.tokenizer.display()))
    };
    let (start, pad) = (special(DECODER_START)?, special(PAD)?);
    let device = Device::flex().autodiff();
    device.seed(t.seed);
    let (model, model_config) = Bert2Bert::load_or_warm_start(&t.init, start, pad, &device)
        .with_context(|| format!("cannot start the student from {}", t.init.display()))?;
    let positions = model_config.encoder.max_position_embeddings.min(model_config.decoder.max_position_embeddings);
    if t.max_source_tokens.max(t.max_target_tokens) > positions {
        bail!(
            "train_gen.max_source_tokens / max_target_tokens ({} / {}) exceed the model's {positions} positions",
            t.max_source_tokens,
            t.max_target_tokens
        );
    }

    let stage1 = Stage1Config {
        batch_size: t.batch_size,
        steps: t.steps,
        learning_rate: t.learning_rate,
        warmup_steps: t.warmup_steps,
        weight_decay: t.weight_decay,
        label_smoothing: t.label_smoothing,
        clip_norm: t.clip_norm,
        save_every: t.save_every,
        seed: t.seed,
    };
    let out = config.job.stage1_dir();
    let bar = Bar::new();
    bar.begin("train-gen", t.steps as u64, Unit::Items);
    train_stage1(model, &model_config, &source_tokenizer, &target_tokenizer, &pairs, &stage1, &out, |step| {
        bar.advance(1);
        if step.step % 10 == 0 || step.step == t.steps {
            info!(
                step = step.step,
                loss = format!("{:.4}", step.loss),
                nll = format!("{:.4}", step.nll),
                accuracy = format!("{:.3}", step.accuracy),
                grad_norm = format!("{:.3}", step.grad_norm),
                lr = step.learning_rate,
                "train-gen"
            );
        }
    })?;
    bar.finish();
    info!(out = %out.display(), "stage 1 done: weights/final, train_log.jsonl");
    Ok(())
}
