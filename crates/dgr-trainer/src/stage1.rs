//! Stage 1: training the student to generate identifiers (method §1) with the token-level
//! generation loss, AdamW, linear warmup then linear decay, and weight saves along the way.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use dgr_model::bert2bert::{Bert2Bert, Bert2BertConfig};
use dgr_model::seq2seq::{EncoderDecoder, Source};
use dgr_model::tokenizer::{TextTokenizer, batch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tracing::warn;

use crate::clip::clip_global_norm;
use crate::pairs::TrainingPair;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to train on: {0}")]
    NoData(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage1Config {
    pub batch_size: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub clip_norm: f32,
    /// Save the weights every this many steps (0 = only at the end).
    pub save_every: usize,
    pub seed: u64,
}

/// One optimisation step, as logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepLog {
    pub step: usize,
    /// The minimised loss (label-smoothed token cross-entropy).
    pub loss: f32,
    /// Unsmoothed token NLL of the same batch.
    pub nll: f32,
    /// Teacher-forced arg-max token accuracy of the batch.
    pub accuracy: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub learning_rate: f64,
    pub seconds: f64,
}

/// Linear warmup to the peak rate over `warmup_steps`, then linear decay to 0 at `steps`.
pub fn learning_rate(step: usize, config: &Stage1Config) -> f64 {
    let peak = config.learning_rate;
    if step < config.warmup_steps {
        return peak * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let remaining = config.steps.saturating_sub(step) as f64;
    let decay_steps = config.steps.saturating_sub(config.warmup_steps).max(1) as f64;
    peak * remaining / decay_steps
}

/// Token ids of pairs, ready to batch: source with special tokens; labels = target tokens
/// after the start token, ending with the separator that ends a sequence.
struct Tokenized {
    source: dgr_model::tokenizer::Encoded,
    labels: Vec<i64>,
}

fn tokenize(
    pairs: &[TrainingPair],
    source_tokenizer: &TextTokenizer,
    target_tokenizer: &TextTokenizer,
) -> Result<Vec<Tokenized>, TrainError> {
    let (mut cut_sources, mut cut_targets) = (0usize, 0usize);
    let data = pairs
        .iter()
        .map(|pair| {
            let source = source_tokenizer.encode(&pair.source)?;
            let target = target_tokenizer.encode(&pair.target)?;
            cut_sources += usize::from(source.truncated);
            cut_targets += usize::from(target.truncated);
            let labels = target.ids.iter().skip(1).map(|&t| i64::from(t)).collect();
            Ok(Tokenized { source, labels })
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    if cut_sources + cut_targets > 0 {
        warn!(
            sources = cut_sources,
            source_limit = source_tokenizer.max_length(),
            targets = cut_targets,
            target_limit = target_tokenizer.max_length(),
            "training pairs truncated to the token limits"
        );
    }
    Ok(data)
}

/// Trains `model` (on an autodiff device) on `pairs` for `config.steps` steps, appending one
/// JSON line per step to `out_dir/train_log.jsonl` and saving HF-layout weights to
/// `out_dir/weights/step-NNNNNNN/` (and `out_dir/weights/final/`). `on_step` sees each step.
#[allow(clippy::too_many_arguments)]
pub fn train_stage1(
    mut model: Bert2Bert,
    model_config: &Bert2BertConfig,
    source_tokenizer: &TextTokenizer,
    target_tokenizer: &TextTokenizer,
    pairs: &[TrainingPair],
    config: &Stage1Config,
    out_dir: &Path,
    mut on_step: impl FnMut(&StepLog),
) -> Result<Bert2Bert, TrainError> {
    if pairs.is_empty() {
        return Err(TrainError::NoData("no training pairs".into()));
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir, "cannot create output directory"))?;
    let log_path = out_dir.join("train_log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(io(&log_path, "cannot create training log"))?;

    let data = tokenize(pairs, source_tokenizer, target_tokenizer)?;
    let device = model.encoder.embeddings.word_embeddings.weight.val().device();
    let mut optim = AdamWConfig::new().with_weight_decay(config.weight_decay as f32).with_epsilon(1e-8).init();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = Vec::new();
    let pad = model_config.pad_token_id;
    for step in 0..config.steps {
        let started = Instant::now();
        if order.len() < config.batch_size {
            let mut epoch: Vec<usize> = (0..data.len()).collect();
            epoch.shuffle(&mut rng);
            order.extend(epoch);
        }
        let picked: Vec<usize> = order.drain(..config.batch_size.min(order.len())).collect();
        let sources: Vec<_> = picked.iter().map(|&i| data[i].source.clone()).collect();
        let labels: Vec<Vec<i64>> = picked.iter().map(|&i| data[i].labels.clone()).collect();
        let input = batch(&sources, &device);
        let source = Source { ids: input.input_ids, mask: input.attention_mask };
        let loss = model.generation_loss(&source, &labels, pad, config.label_smoothing);
        let lr = learning_rate(step, config);
        let mut grads = GradientsParams::from_grads(loss.loss.backward(), &model);
        let grad_norm = clip_global_norm(&model, &mut grads, config.clip_norm);
        model = optim.step(lr, model, grads);
        let entry = StepLog {
            step: step + 1,
            loss: loss.loss.into_scalar::<f32>(),
            nll: loss.nll.into_scalar::<f32>(),
            accuracy: loss.accuracy.into_scalar::<f32>(),
            grad_norm,
            learning_rate: lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        writeln!(log, "{line}").map_err(io(&log_path, "cannot write training log"))?;
        on_step(&entry);
        if config.save_every > 0 && entry.step.is_multiple_of(config.save_every) {
            save(&model, model_config, &out_dir.join("weights").join(format!("step-{:07}", entry.step)))?;
        }
    }
    save(&model, model_config, &out_dir.join("weights").join("final"))?;
    Ok(model)
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, action, source }
}

/// Saves into a temporary directory and renames it into place.
fn save(model: &Bert2Bert, config: &Bert2BertConfig, dir: &Path) -> Result<(), TrainError> {
    let mut partial = dir.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_dir_all(&partial);
    model.save(&partial, config)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir, "cannot replace previous weights"))?;
    }
    std::fs::rename(&partial, dir).map_err(io(dir, "cannot rename weights into place"))
}
