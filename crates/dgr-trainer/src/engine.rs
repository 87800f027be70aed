//! The training engine both stages run on: the data order, gradient accumulation, global-norm
//! clipping, AdamW with linear warmup and decay, a JSON line per step, checkpoints, and exact
//! resume from the newest intact checkpoint.
//!
//! What is trained on is an [`Objective`]: it knows how many examples there are and the loss of
//! a few of them. The engine owns everything else, so a resumed run takes exactly the steps an
//! uninterrupted one would: the data order of epoch `e` is a permutation seeded by `(seed, e)`
//! and a step's own random draws come from a generator seeded by `(seed, step)`, so the
//! checkpointed step and cursor are all the state randomness has.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use dgr_model::bert2bert::{Bert2Bert, Bert2BertConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::checkpoint::{CheckpointError, Cursor, RunIdentity, restore_latest, write_checkpoint};
use crate::clip::clip_global_norm;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to train on: {0}")]
    NoData(String),
    #[error("invalid training input: {0}")]
    Input(String),
}

/// How the engine optimises, whatever the objective (`[train_gen]`, `[train_distill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Optimisation steps of the whole run.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients make one step.
    pub accumulation: usize,
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Steps of linear warmup to the peak; linear decay to 0 at `steps` follows.
    pub warmup_steps: u64,
    pub weight_decay: f64,
    /// Clip of the global gradient norm over all parameters (0 = off).
    pub clip_norm: f32,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (the newest ones).
    pub keep_checkpoints: usize,
    /// Evaluate retrieval on the dev split every this many steps (0 = never); the caller runs
    /// it when [`EngineConfig::evaluation_due`] says so.
    pub eval_every: u64,
    /// Dev queries of such an evaluation (the first ones of the split).
    pub eval_queries: usize,
    pub seed: u64,
}

impl EngineConfig {
    /// Whether the dev evaluation is due after `step`.
    pub fn evaluation_due(&self, step: u64) -> bool {
        self.eval_every > 0 && step.is_multiple_of(self.eval_every)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            steps: 1000,
            batch_size: 8,
            accumulation: 1,
            learning_rate: 5e-5,
            warmup_steps: 100,
            weight_decay: 0.01,
            clip_norm: 1.0,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            eval_every: 0,
            eval_queries: 200,
            seed: 42,
        }
    }
}

/// Linear warmup to the peak rate over `warmup_steps`, then linear decay to 0 at `steps`
/// (`step` counts from 0).
pub fn learning_rate(step: u64, config: &EngineConfig) -> f64 {
    let peak = config.learning_rate;
    if step < config.warmup_steps {
        return peak * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let remaining = config.steps.saturating_sub(step) as f64;
    let decay_steps = config.steps.saturating_sub(config.warmup_steps).max(1) as f64;
    peak * remaining / decay_steps
}

/// The loss of some examples, and named measures for the step log (averaged over the step's
/// micro-batches; those named `*_seconds` are summed). The engine adds `backward_seconds` and
/// `optimizer_seconds` (clipping and the AdamW update).
pub struct Loss {
    /// Differentiable, shape `[1]`.
    pub loss: Tensor<1>,
    pub measures: BTreeMap<&'static str, f64>,
}

/// What a stage trains on.
pub trait Objective {
    /// Examples the data order permutes.
    fn examples(&self) -> usize;
    /// The loss of examples `items` on `model`; `rng` is this micro-batch's own generator.
    fn loss(&mut self, model: &Bert2Bert, items: &[usize], rng: &mut StdRng) -> Result<Loss, TrainError>;
}

/// One optimisation step, as logged (`train_log.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    /// The minimised loss, averaged over micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub learning_rate: f64,
    pub seconds: f64,
    /// The objective's own measures.
    #[serde(flatten)]
    pub measures: BTreeMap<String, f64>,
}

/// Where a run writes and what it is.
pub struct RunSetup<'a> {
    /// The stage directory: `train_log.jsonl`, `checkpoints/`, `weights/final/`.
    pub out_dir: &'a Path,
    pub identity: RunIdentity,
    /// Start from the given model even if checkpoints exist (they are removed).
    pub fresh: bool,
}

/// The trained student and where the run started.
pub struct Trained {
    pub model: Bert2Bert,
    /// The step of the checkpoint the run resumed from, if it did.
    pub resumed_from: Option<u64>,
}

/// The permutation of each epoch, remade on demand from `(seed, epoch)`.
struct DataOrder {
    seed: u64,
    examples: usize,
    epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    /// The next `count` examples from `cursor` on, moving it (into the next epoch when one ends).
    fn take(&mut self, cursor: &mut Cursor, count: usize) -> Vec<usize> {
        let mut items = Vec::with_capacity(count);
        while items.len() < count {
            if cursor.position as usize >= self.examples {
                *cursor = Cursor { epoch: cursor.epoch + 1, position: 0 };
            }
            let permutation = match &self.epoch {
                Some((epoch, permutation)) if *epoch == cursor.epoch => permutation,
                _ => {
                    let mut permutation: Vec<usize> = (0..self.examples).collect();
                    permutation.shuffle(&mut stream(self.seed, DATA_ORDER, cursor.epoch));
                    &self.epoch.insert((cursor.epoch, permutation)).1
                }
            };
            items.push(permutation[cursor.position as usize]);
            cursor.position += 1;
        }
        items
    }
}

// Purposes of `stream`, in one place so that no two draw the same numbers.
const DATA_ORDER: u64 = 1;
const STEP_DRAWS: u64 = 2;
/// Stage 2's negative pools, drawn once per query.
pub const NEGATIVE_POOLS: u64 = 3;

/// An independent generator for `(seed, purpose, n)`.
pub fn stream(seed: u64, purpose: u64, n: u64) -> StdRng {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ purpose) ^ n))
}

/// Trains `model` (on an autodiff device) for `config.steps` steps in all, resuming from the
/// newest intact checkpoint under `setup.out_dir/checkpoints` unless `setup.fresh`. Appends one
/// JSON line per step to `train_log.jsonl` (lines of steps after the resumed checkpoint are
/// dropped first), checkpoints every `checkpoint_every` steps and at the end, and saves
/// `weights/final`. `on_step` sees each step and the model after it.
pub fn train(
    mut model: Bert2Bert,
    model_config: &Bert2BertConfig,
    objective: &mut impl Objective,
    config: &EngineConfig,
    setup: &RunSetup,
    mut on_step: impl FnMut(&StepLog, &Bert2Bert) -> Result<(), TrainError>,
) -> Result<Trained, TrainError> {
    let examples = objective.examples();
    if examples == 0 {
        return Err(TrainError::NoData("no training examples".into()));
    }
    let out_dir = setup.out_dir;
    let checkpoints = out_dir.join("checkpoints");
    std::fs::create_dir_all(out_dir).map_err(io(out_dir, "cannot create output directory"))?;
    if setup.fresh && checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints).map_err(io(&checkpoints, "cannot remove old checkpoints"))?;
    }
    let device = model.device();
    let mut optimizer = AdamWConfig::new().with_weight_decay(config.weight_decay as f32).with_epsilon(1e-8).init();
    let (mut step, mut cursor, mut resumed_from) = (0u64, Cursor::default(), None);
    let timer = Instant::now();
    if let Some(restored) = restore_latest(&checkpoints, &setup.identity, &model, optimizer.clone(), &device)? {
        info!(
            checkpoint = %restored.dir.display(),
            step = restored.state.step,
            seconds = format!("{:.2}", timer.elapsed().as_secs_f64()),
            "resuming"
        );
        model = restored.model;
        optimizer = restored.optimizer;
        step = restored.state.step;
        cursor = restored.state.cursor;
        resumed_from = Some(step);
    }
    let log_path = out_dir.join("train_log.jsonl");
    let mut log = open_log(&log_path, step)?;

    let mut order = DataOrder { seed: config.seed, examples, epoch: None };
    let micro_batches = config.accumulation.max(1);
    while step < config.steps {
        let started = Instant::now();
        let lr = learning_rate(step, config);
        let mut accumulated = GradientsAccumulator::<Bert2Bert>::new();
        let mut loss_sum = 0.0;
        let mut measures: BTreeMap<String, f64> = BTreeMap::new();
        for micro in 0..micro_batches {
            let items = order.take(&mut cursor, config.batch_size);
            let mut rng = stream(config.seed, STEP_DRAWS, step * micro_batches as u64 + micro as u64);
            let Loss { loss, measures: these } = objective.loss(&model, &items, &mut rng)?;
            let loss = loss / micro_batches as f64;
            loss_sum += f64::from(loss.clone().detach().into_scalar::<f32>());
            for (name, value) in these {
                // Times add up over micro-batches; the other measures are averaged.
                let share = if name.ends_with("_seconds") { value } else { value / micro_batches as f64 };
                *measures.entry(name.to_string()).or_default() += share;
            }
            let timer = Instant::now();
            accumulated.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            *measures.entry("backward_seconds".into()).or_default() += timer.elapsed().as_secs_f64();
        }
        let timer = Instant::now();
        let mut grads = accumulated.grads();
        let grad_norm = clip_global_norm(&model, &mut grads, config.clip_norm);
        model = optimizer.step(lr, model, grads);
        measures.insert("optimizer_seconds".into(), timer.elapsed().as_secs_f64());
        step += 1;
        let seconds = started.elapsed().as_secs_f64();
        let entry = StepLog { step, loss: loss_sum, grad_norm, learning_rate: lr, seconds, measures };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        writeln!(log, "{line}").and_then(|_| log.flush()).map_err(io(&log_path, "cannot write training log"))?;
        let every = config.checkpoint_every;
        if step == config.steps || (every > 0 && step.is_multiple_of(every)) {
            let timer = Instant::now();
            let (written, bytes) = write_checkpoint(
                &checkpoints,
                &model,
                model_config,
                &optimizer,
                step,
                cursor,
                config.seed,
                &setup.identity,
                config.keep_checkpoints,
            )?;
            info!(
                dir = %written.display(),
                bytes,
                seconds = format!("{:.2}", timer.elapsed().as_secs_f64()),
                "checkpoint written"
            );
        }
        on_step(&entry, &model)?;
    }
    save_weights(&model, model_config, &out_dir.join("weights").join("final"))?;
    Ok(Trained { model, resumed_from })
}

/// Opens the step log for appending, keeping only the lines of steps up to `step` (those of
/// steps after the checkpoint a run resumes from are redone).
fn open_log(path: &Path, step: u64) -> Result<std::fs::File, TrainError> {
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) if step > 0 => text
            .lines()
            .filter(|line| serde_json::from_str::<StepLog>(line).is_ok_and(|entry| entry.step <= step))
            .map(|line| format!("{line}\n"))
            .collect(),
        _ => Vec::new(),
    };
    dgr_core::atomic::write_atomic(path, kept.concat().as_bytes())?;
    std::fs::OpenOptions::new().append(true).open(path).map_err(io(path, "cannot open training log"))
}

pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, action, source }
}

/// Saves HF-layout weights into a temporary directory and renames it into place.
pub fn save_weights(model: &Bert2Bert, config: &Bert2BertConfig, dir: &Path) -> Result<(), TrainError> {
    let staging = dgr_core::atomic::StagingDir::create(dir, true)?;
    model.save(staging.path(), config)?;
    staging.commit()?;
    Ok(())
}
