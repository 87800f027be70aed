//! The training engine both stages run on: the data order, gradient accumulation, global-norm
//! clipping, AdamW with linear warmup and decay, a JSON line per step, checkpoints, and exact
//! resume from the newest intact checkpoint.
//!
//! What is trained on is an [`Objective`]: it knows how many examples there are and the loss of
//! a few of them. The engine owns everything else, so a resumed run takes exactly the steps an
//! uninterrupted one would: the data order of epoch `e` is a permutation seeded by `(seed, e)`
//! and each example's own random draws come from a generator seeded by its place in that order,
//! so the checkpointed step and cursor are all the state randomness has.
//!
//! Data-parallel ranks share one cursor: each micro-batch takes `batch_size` examples per rank
//! from the global order and rank `r` trains on the `r`-th slice. Every rank's loss is the mean
//! over its examples' weights (tokens, queries); gradients are summed weighted and divided by the
//! total weight of the step over all ranks, so N ranks of `b` examples take the step one rank
//! of `N b` would, and a resumed run may use another world size without repeating or skipping
//! an example.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use dgr_collective::{Collective, CollectiveError, Solo};
use dgr_model::student::{Student, StudentConfig};
use rand::RngCore;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use smallperm::Permutation;
use tracing::info;

use crate::checkpoint::{CheckpointError, Cursor, RunIdentity, restore_latest, write_checkpoint};
use crate::clip::clip_global_norm;
use crate::data_parallel::all_reduce_gradients;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
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
/// micro-batches and ranks; those named `*_seconds` are summed over micro-batches). The engine
/// adds `backward_seconds`, `optimizer_seconds` (clipping and the AdamW update) and, on several
/// ranks, `all_reduce_seconds`.
pub struct Loss {
    /// Differentiable, shape `[1]`: the mean over the examples' terms.
    pub loss: Tensor<1>,
    /// How many terms `loss` is the mean of (label tokens, queries): a step's gradient is the
    /// mean over all terms of its micro-batches on every rank.
    pub weight: f64,
    pub measures: BTreeMap<&'static str, f64>,
}

/// An example of a micro-batch and its own generator, seeded by the example's place in the data
/// order: the same draws whichever rank, batch size or resumed run trains on it.
pub struct Example {
    pub index: usize,
    pub rng: StdRng,
}

/// What a stage trains on.
pub trait Objective {
    /// Examples the data order permutes.
    fn examples(&self) -> usize;
    /// The loss of `examples` on `model`.
    fn loss(&mut self, model: &Student, examples: &mut [Example]) -> Result<Loss, TrainError>;
    /// The objective's own measure of `model` on examples that stay the same through a run, so
    /// that measures taken at different steps compare; `None` when it has none.
    fn fixed_measure(&self, _model: &Student) -> Result<Option<FixedMeasure>, TrainError> {
        Ok(None)
    }
}

/// What [`Objective::fixed_measure`] found: its kind, how many examples it looked at, and the
/// values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FixedMeasure {
    pub kind: &'static str,
    pub examples: usize,
    pub metrics: BTreeMap<&'static str, f64>,
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

/// Where a run writes, what it is, and the ranks it runs on.
pub struct RunSetup<'a> {
    /// The stage directory: `train_log.jsonl`, `checkpoints/`, `weights/final/`. Rank 0 writes
    /// it; on several ranks every rank reads its checkpoints (a directory all ranks share).
    pub out_dir: &'a Path,
    pub identity: RunIdentity,
    /// Start from the given model even if checkpoints exist (they are removed).
    pub fresh: bool,
    /// The data-parallel ranks this process is one of.
    pub collective: Box<dyn Collective + 'a>,
    /// Set (by a signal handler) to stop after the current step with a checkpoint of it; one
    /// rank's request stops every rank at the same step.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> RunSetup<'a> {
    /// A run on one rank that only ends when its steps are done.
    pub fn new(out_dir: &'a Path, identity: RunIdentity, fresh: bool) -> Self {
        RunSetup { out_dir, identity, fresh, collective: Box::new(Solo), stop: None }
    }
}

/// The trained student and where the run started and ended.
pub struct Trained {
    pub model: Student,
    /// The step of the checkpoint the run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// The step it stopped after when asked to (its checkpoint is written), if it was.
    pub stopped_at: Option<u64>,
}

/// The order of each epoch: a keyed pseudo-random permutation of the examples (a Feistel
/// network keyed by `(seed, epoch)`), computed per position, so no order is held in memory
/// however many examples there are.
struct DataOrder {
    seed: u64,
    examples: usize,
    epoch: Option<(u64, Permutation)>,
}

impl DataOrder {
    /// The next `count` examples from `cursor` on, moving it (into the next epoch when one ends),
    /// each with its place in the order, `epoch << 32 | position`.
    fn take(&mut self, cursor: &mut Cursor, count: usize) -> Vec<(usize, u64)> {
        let mut items = Vec::with_capacity(count);
        while items.len() < count {
            if cursor.position as usize >= self.examples {
                *cursor = Cursor { epoch: cursor.epoch + 1, position: 0 };
            }
            let permutation = match &self.epoch {
                Some((epoch, permutation)) if *epoch == cursor.epoch => permutation,
                _ => {
                    let key = stream(self.seed, DATA_ORDER, cursor.epoch).next_u64();
                    &self.epoch.insert((cursor.epoch, Permutation::new(self.examples as u128, key))).1
                }
            };
            let example = permutation.get(u128::from(cursor.position)).unwrap_or_default() as usize;
            items.push((example, cursor.epoch << 32 | cursor.position));
            cursor.position += 1;
        }
        items
    }
}

/// Example `position` of epoch `epoch` in the data order of `examples` examples.
pub fn example_at(seed: u64, examples: usize, epoch: u64, position: u64) -> usize {
    let mut order = DataOrder { seed, examples, epoch: None };
    order.take(&mut Cursor { epoch, position }, 1)[0].0
}

// Purposes of `stream`, in one place so that no two draw the same numbers.
const DATA_ORDER: u64 = 1;
/// An example's own draws, by its place in the data order.
const EXAMPLE_DRAWS: u64 = 2;
/// Stage 2's negative pools, drawn once per query.
pub const NEGATIVE_POOLS: u64 = 3;
/// Stage 2's lists that `"auto"` margins and temperatures are measured on, one draw per query.
pub const LOSS_SCALES: u64 = 4;
/// Stage 1's pairs, one draw per numbered pair.
pub const PAIR_DRAWS: u64 = 5;

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
/// dropped first), checkpoints every `checkpoint_every` steps, at the end and when asked to
/// stop, and saves `weights/final`; on several ranks, rank 0 writes all of these. `on_step`
/// sees each step, the model after it and the objective.
pub fn train<O: Objective>(
    mut model: Student,
    model_config: &StudentConfig,
    objective: &mut O,
    config: &EngineConfig,
    setup: RunSetup,
    mut on_step: impl FnMut(&StepLog, &Student, &O) -> Result<(), TrainError>,
) -> Result<Trained, TrainError> {
    let examples = objective.examples();
    if examples == 0 {
        return Err(TrainError::NoData("no training examples".into()));
    }
    if examples as u64 > u64::from(u32::MAX) {
        // A place in the data order is `epoch << 32 | position`.
        return Err(TrainError::Input(format!("{examples} examples: at most {} fit one epoch's order", u32::MAX)));
    }
    let RunSetup { out_dir, identity, fresh, mut collective, stop } = setup;
    let (rank, world) = (collective.rank(), collective.world_size());
    let writes = rank == 0;
    let checkpoints = out_dir.join("checkpoints");
    std::fs::create_dir_all(out_dir).map_err(io(out_dir, "cannot create output directory"))?;
    if fresh && writes && checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints).map_err(io(&checkpoints, "cannot remove old checkpoints"))?;
    }
    let device = model.device();
    let mut optimizer = AdamWConfig::new().with_weight_decay(config.weight_decay as f32).with_epsilon(1e-8).init();
    let (mut step, mut cursor, mut resumed_from) = (0u64, Cursor::default(), None);
    let timer = Instant::now();
    let restored =
        if fresh { None } else { restore_latest(&checkpoints, &identity, &model, optimizer.clone(), &device)? };
    if let Some(restored) = restored {
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
    agree_on_start(collective.as_mut(), step)?;
    let log_path = out_dir.join("train_log.jsonl");
    let mut log = if writes { Some(open_log(&log_path, step)?) } else { None };

    let mut order = DataOrder { seed: config.seed, examples, epoch: None };
    let micro_batches = config.accumulation.max(1);
    let mut stopped_at = None;
    while step < config.steps {
        let started = Instant::now();
        let lr = learning_rate(step, config);
        let mut accumulated = GradientsAccumulator::<Student>::new();
        let (mut weight_sum, mut loss_sum) = (0.0, 0.0);
        let mut measures: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..micro_batches {
            let global = order.take(&mut cursor, config.batch_size * world);
            let mut mine: Vec<Example> = global[rank * config.batch_size..(rank + 1) * config.batch_size]
                .iter()
                .map(|&(index, place)| Example { index, rng: stream(config.seed, EXAMPLE_DRAWS, place) })
                .collect();
            let Loss { loss, weight, measures: these } = objective.loss(&model, &mut mine)?;
            loss_sum += f64::from(loss.clone().detach().into_scalar::<f32>()) * weight;
            weight_sum += weight;
            for (name, value) in these {
                // Times add up over micro-batches; the other measures are averaged.
                let share = if name.ends_with("_seconds") { value } else { value / micro_batches as f64 };
                *measures.entry(name.to_string()).or_default() += share;
            }
            let timer = Instant::now();
            // Weighted sums here, divided by the step's total weight once all are in.
            accumulated.accumulate(&model, GradientsParams::from_grads((loss * weight).backward(), &model));
            *measures.entry("backward_seconds".into()).or_default() += timer.elapsed().as_secs_f64();
        }
        let mut grads = accumulated.grads();
        let timer = Instant::now();
        let stop_requested = stop.is_some_and(|flag| flag.load(Ordering::SeqCst));
        let mut scalars: Vec<f64> = [weight_sum, loss_sum, f64::from(u8::from(stop_requested))]
            .into_iter()
            .chain(measures.values().copied())
            .collect();
        all_reduce_gradients(&model, &mut grads, &mut scalars, collective.as_mut(), |sums| {
            1.0 / sums[0].max(1e-12) as f32
        })?;
        if world > 1 {
            for (value, sum) in measures.values_mut().zip(&scalars[3..]) {
                *value = sum / world as f64;
            }
            measures.insert("all_reduce_seconds".into(), timer.elapsed().as_secs_f64());
        }
        let (weight_sum, loss_sum, stop_requested) = (scalars[0], scalars[1], scalars[2] > 0.0);
        let timer = Instant::now();
        let grad_norm = clip_global_norm(&model, &mut grads, config.clip_norm);
        model = optimizer.step(lr, model, grads);
        measures.insert("optimizer_seconds".into(), timer.elapsed().as_secs_f64());
        step += 1;
        let seconds = started.elapsed().as_secs_f64();
        let entry =
            StepLog { step, loss: loss_sum / weight_sum.max(1e-12), grad_norm, learning_rate: lr, seconds, measures };
        if let Some(log) = log.as_mut() {
            let line = serde_json::to_string(&entry).unwrap_or_default();
            writeln!(log, "{line}").and_then(|_| log.flush()).map_err(io(&log_path, "cannot write training log"))?;
        }
        let every = config.checkpoint_every;
        if writes && (step == config.steps || stop_requested || (every > 0 && step.is_multiple_of(every))) {
            let timer = Instant::now();
            let (written, bytes) = write_checkpoint(
                &checkpoints,
                &model,
                model_config,
                &optimizer,
                step,
                cursor,
                config.seed,
                &identity,
                config.keep_checkpoints,
            )?;
            info!(
                dir = %written.display(),
                bytes,
                seconds = format!("{:.2}", timer.elapsed().as_secs_f64()),
                "checkpoint written"
            );
        }
        on_step(&entry, &model, objective)?;
        if stop_requested && step < config.steps {
            info!(step, "stopping as asked; the run resumes from this step's checkpoint");
            stopped_at = Some(step);
            break;
        }
    }
    if writes && stopped_at.is_none() {
        save_weights(&model, model_config, &out_dir.join("weights").join("final"))?;
    }
    // Every rank returns once rank 0's files are written.
    collective.barrier()?;
    Ok(Trained { model, resumed_from, stopped_at })
}

/// Checks every rank starts from the step rank 0 starts from: ranks that read different
/// checkpoints (a job directory that is not shared, a checkpoint written in between) would
/// train different models.
fn agree_on_start(collective: &mut dyn Collective, step: u64) -> Result<(), TrainError> {
    let mut first = step.to_le_bytes();
    collective.broadcast(&mut first, 0)?;
    let first = u64::from_le_bytes(first);
    if first != step {
        return Err(TrainError::Input(format!(
            "rank {} starts from step {step} but rank 0 from step {first}: every rank must see the same \
             checkpoints (one job directory shared by all nodes)",
            collective.rank()
        )));
    }
    Ok(())
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
pub fn save_weights(model: &Student, config: &StudentConfig, dir: &Path) -> Result<(), TrainError> {
    let staging = dgr_core::atomic::StagingDir::create(dir, true)?;
    model.save(staging.path(), config)?;
    staging.commit()?;
    Ok(())
}
