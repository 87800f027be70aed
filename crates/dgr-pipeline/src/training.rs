//! What both training commands share: running a stage on the engine with a progress bar, a log
//! line every 10 steps and dev evaluations, and the checksum that ties a run to its model.

use std::path::Path;

use crate::error::{Context, Result};
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_model::student::{Student, StudentConfig};
use dgr_trainer::checkpoint::{RunIdentity, latest_state};
use dgr_trainer::engine::{EngineConfig, Objective, RunSetup, StepLog, TrainError, train};
use tracing::info;

use crate::config::Config;
use crate::dev_eval::DevEvaluation;
use crate::metrics::append_metrics;
use crate::ranks::{Rank, RankPlace};

/// One stage's run: `stage` names it in logs and `metrics.jsonl`.
pub struct StageRun<'a> {
    pub stage: &'static str,
    pub engine: &'a EngineConfig,
    pub out_dir: &'a Path,
    pub identity: RunIdentity,
    pub fresh: bool,
    /// Alone, or one rank of a data-parallel job.
    pub place: &'a RankPlace,
}

/// Trains `model` on `objective` as `run` says, resuming from the stage's newest checkpoint.
/// On several ranks, rank 0 shows the progress, logs the steps and runs the dev evaluations.
pub fn run_stage(
    config: &Config,
    run: StageRun,
    model: Student,
    model_config: &StudentConfig,
    objective: &mut impl Objective,
    progress: &dyn Progress,
) -> Result<()> {
    let StageRun { stage, engine, out_dir, identity, fresh, place } = run;
    let mut rank = Rank::join(config, place, stage)?;
    let leader = rank.rank == 0;
    let evaluation = if leader { DevEvaluation::load(config, engine, stage)? } else { None };
    let setup =
        RunSetup { collective: rank.collective(), stop: Some(&rank.stop), ..RunSetup::new(out_dir, identity, fresh) };
    let measures = leader && engine.eval_every > 0;
    // The starting point of the fixed measure's curve, unless a checkpoint continues the run.
    if measures && (fresh || latest_state(&out_dir.join("checkpoints")).is_none()) {
        rank.outside_step(|| record_fixed_measure(config, stage, &*objective, &model, 0))?;
    }
    if leader {
        progress.begin(stage, engine.steps, Unit::Items);
    }
    let trained = train(model, model_config, objective, engine, setup, |step, model, objective| {
        rank.record(step);
        if !leader {
            return Ok(());
        }
        progress.advance(1);
        log_step(stage, step, engine.steps);
        if let Some(evaluation) = &evaluation
            && engine.evaluation_due(step.step)
        {
            rank.outside_step(|| evaluation.run(config, model, step.step))
                .map_err(|e| TrainError::Input(format!("dev evaluation: {}", crate::error::report(&e))))?;
        }
        if measures && engine.evaluation_due(step.step) {
            rank.outside_step(|| record_fixed_measure(config, stage, objective, model, step.step))
                .map_err(|e| TrainError::Input(format!("fixed measure: {}", crate::error::report(&e))))?;
        }
        Ok(())
    });
    progress.finish();
    let trained = rank.finish(trained)?;
    if let Some(step) = trained.resumed_from {
        info!(step, "resumed from a checkpoint");
    }
    Ok(())
}

/// Appends the objective's measure of `model` on its fixed examples (after `step`) to
/// `metrics.jsonl`, beside the dev evaluations, when it has one.
fn record_fixed_measure(
    config: &Config,
    stage: &str,
    objective: &impl Objective,
    model: &Student,
    step: u64,
) -> Result<()> {
    let Some(measure) = objective.fixed_measure(model)? else { return Ok(()) };
    info!(step, kind = measure.kind, examples = measure.examples, metrics = ?measure.metrics, "{stage} fixed measure");
    let line = serde_json::json!({
        "stage": stage,
        "step": step,
        "split": "train",
        "kind": measure.kind,
        "queries": measure.examples,
        "metrics": measure.metrics,
    });
    append_metrics(&config.job.dir.join("metrics.jsonl"), &[line])
}

/// The SHA-256 of a model directory's weights: what a run's checkpoints are tied to.
pub fn weights_checksum(dir: &Path) -> Result<String> {
    file_checksum(&dir.join("model.safetensors"))
}

/// The SHA-256 of an input file, for a run's fingerprint.
pub fn file_checksum(path: &Path) -> Result<String> {
    Ok(sha256_file(path).with_context(|| format!("cannot read {}", path.display()))?.1)
}

/// Logs every 10th step and the last: the loss and every measure of the objective.
fn log_step(stage: &str, step: &StepLog, steps: u64) {
    if step.step.is_multiple_of(10) || step.step == steps {
        let measures: Vec<String> = step.measures.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        info!(
            step = step.step,
            loss = format!("{:.4}", step.loss),
            grad_norm = format!("{:.3}", step.grad_norm),
            lr = step.learning_rate,
            seconds = format!("{:.2}", step.seconds),
            "{stage} {}",
            measures.join(" ")
        );
    }
}
