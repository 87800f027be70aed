//! The file-level configuration of a job: one section per setting group, each owned by the
//! crate that uses it, layered by `dgr_core::config::load` (embedded defaults < `--config` file < `DGR_`
//! environment < flags), then checked across sections.

use std::path::Path;

use crate::error::{Context, Result, bail};
use dgr_coordinator::rendezvous::RanksConfig;
use dgr_core::config::{
    Bm25Config, CoordinatorConfig, EvalConfig, IndexConfig, JobConfig, PrepareConfig, WorkerConfig,
};
use dgr_index::evidence::ScoringConfig;
use dgr_model::device::DeviceConfig;
use dgr_model::retrieve::RetrievalConfig;
use dgr_teacher::teacher::TeacherConfig;
use dgr_trainer::distill::DistillConfig;
use dgr_trainer::engine::EngineConfig;
use dgr_trainer::loss_scale::ScoreScale;
use dgr_trainer::stage1::TrainGenConfig;

use crate::job::RunConfig;
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub job: JobConfig,
    pub device: DeviceConfig,
    pub prepare: PrepareConfig,
    pub bm25: Bm25Config,
    pub index: IndexConfig,
    pub eval: EvalConfig,
    pub train_gen: TrainGenConfig,
    pub retrieve: RetrieveConfig,
    pub teacher: TeacherConfig,
    pub train_distill: DistillConfig,
    pub coordinator: CoordinatorConfig,
    pub worker: WorkerConfig,
    pub ranks: RanksConfig,
    pub run: RunConfig,
}

/// Generative retrieval (`dgr retrieve`, `[retrieve]`): the student and how the work is cut
/// and spread; the search (`[retrieve.search]`) and scoring (`[retrieve.scoring]`) settings are
/// those of `dgr-model` and `dgr-index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveConfig {
    /// The student: a BERT2BERT or BART directory saved by `dgr train-gen`. Empty: the job's
    /// `stage1/weights/final`.
    pub model: std::path::PathBuf,
    /// Source length limit of the student, in tokens (as in training).
    pub max_source_tokens: usize,
    /// Queries per candidates shard.
    pub shard_queries: usize,
    /// Queries decoded together in one batch (their beams share each decoder pass).
    pub batch_queries: usize,
    /// Threads, each decoding its own batch; 0 = one per core.
    pub threads: usize,
    pub search: RetrievalConfig,
    pub scoring: ScoringConfig,
}

/// Loads and checks the configuration.
pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config> {
    let config: Config = dgr_core::config::load(file, overrides).context("cannot load configuration")?;
    config.validate().context("invalid configuration")?;
    Ok(config)
}

impl Config {
    fn validate(&self) -> Result<()> {
        let split = self.prepare.split;
        if u32::from(split.train) + u32::from(split.dev) + u32::from(split.test) != 100 {
            bail!("prepare.split percentages must add up to 100");
        }
        if self.index.sample_rate == 0 {
            bail!("index.sample_rate must be at least 1");
        }
        if self.bm25.top_k == 0 {
            bail!("bm25.top_k must be at least 1");
        }
        let t = &self.train_gen;
        validate_engine("train_gen", &t.engine)?;
        if t.max_source_tokens < 3 || t.max_target_tokens < 3 {
            bail!("train_gen.max_source_tokens and max_target_tokens must be at least 3");
        }
        let r = &self.retrieve;
        if [r.search.beam, r.search.hits, r.scoring.candidates, r.shard_queries, r.batch_queries].contains(&0)
            || r.max_source_tokens < 3
        {
            bail!(
                "retrieve.search.beam and hits, retrieve.scoring.candidates, retrieve.shard_queries and \
                 batch_queries must be at least 1, retrieve.max_source_tokens at least 3"
            );
        }
        if !(0.0..=1.0).contains(&r.scoring.coverage) || r.scoring.smoothing <= 0.0 {
            bail!("retrieve.scoring.coverage must lie in [0, 1] and retrieve.scoring.smoothing be positive");
        }
        if let Err(e) = r.scoring.source_weights.validate() {
            bail!("retrieve.scoring.{e}");
        }
        let t = &self.teacher;
        if [t.batch_size, t.depth, t.shard_queries].contains(&0) || t.max_tokens < 3 {
            bail!("teacher.batch_size, depth and shard_queries must be at least 1, max_tokens at least 3");
        }
        let d = &self.train_distill;
        validate_engine("train_distill", &d.engine)?;
        if d.keys_per_passage == 0 || d.negative_pool < d.sampled_negatives {
            bail!("train_distill.keys_per_passage must be at least 1 and negative_pool at least sampled_negatives");
        }
        if d.max_source_tokens < 3 || d.max_target_tokens < 3 {
            bail!("train_distill.max_source_tokens and max_target_tokens must be at least 3");
        }
        for (name, temperature) in
            [("student_temperature", d.loss.student_temperature), ("teacher_temperature", d.loss.teacher_temperature)]
        {
            if temperature == ScoreScale::Given(0.0) {
                bail!("train_distill.loss.{name} must be positive or \"auto\"");
            }
        }
        let auto = &d.loss.auto;
        if !(0.0..=1.0).contains(&auto.margin_quantile) || !(auto.step_ratio >= 0.0 && auto.step_ratio.is_finite()) {
            bail!(
                "train_distill.loss.auto.margin_quantile must lie in [0, 1] and train_distill.loss.auto.step_ratio \
                 be a non-negative number"
            );
        }
        let c = &self.coordinator;
        if !(c.heartbeat_seconds > 0.0 && c.lease_seconds > c.heartbeat_seconds) {
            bail!("coordinator.heartbeat_seconds must be positive and below coordinator.lease_seconds");
        }
        if c.max_body_bytes < 1024 {
            bail!("coordinator.max_body_bytes must be at least 1024");
        }
        if self.eval.recall_at.contains(&0) {
            bail!("eval.recall_at cutoffs must be at least 1");
        }
        let r = &self.ranks;
        if r.world_size == 0 {
            bail!("ranks.world_size must be at least 1");
        }
        if !(r.heartbeat_seconds > 0.0 && r.hang_seconds >= 3.0 * r.heartbeat_seconds) {
            bail!("ranks.heartbeat_seconds must be positive and ranks.hang_seconds at least three heartbeats");
        }
        Ok(())
    }
}

fn validate_engine(section: &str, e: &EngineConfig) -> Result<()> {
    if e.steps == 0 || e.batch_size == 0 || e.accumulation == 0 || e.keep_checkpoints == 0 {
        bail!("{section}.engine.steps, batch_size, accumulation and keep_checkpoints must be at least 1");
    }
    if e.learning_rate <= 0.0 {
        bail!("{section}.engine.learning_rate must be positive");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Configuration layering: embedded defaults < user TOML < DGR_ environment < flags.

    use dgr_trainer::loss_scale::ScoreScale;
    use figment::Figment;

    use super::load;

    // Environment variables are process-wide: the cases run in one test, in order.
    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();

        let defaults = load(None, Figment::new()).unwrap();
        assert_eq!(defaults.bm25.top_k, 100);
        assert_eq!(defaults.prepare.format, dgr_core::import::DatasetFormat::WikiVital);

        let user = dir.path().join("user.toml");
        std::fs::write(&user, "[bm25]\ntop_k = 50\nthreads = 3\n").unwrap();
        let config = load(Some(&user), Figment::new()).unwrap();
        assert_eq!((config.bm25.top_k, config.bm25.threads), (50, 3));
        assert_eq!(config.bm25.memory_mb, defaults.bm25.memory_mb, "untouched keys keep defaults");

        // SAFETY: no other thread of this test binary reads the environment.
        unsafe { std::env::set_var("DGR_BM25__TOP_K", "70") };
        let config = load(Some(&user), Figment::new()).unwrap();
        assert_eq!(config.bm25.top_k, 70, "environment beats the file");
        let config = load(Some(&user), Figment::new().merge(("bm25.top_k", 90))).unwrap();
        assert_eq!(config.bm25.top_k, 90, "flags beat the environment");
        unsafe { std::env::remove_var("DGR_BM25__TOP_K") };

        std::fs::write(&user, "[train_distill.loss]\nmargin = 3.0\n").unwrap();
        let config = load(Some(&user), Figment::new()).unwrap();
        assert_eq!(config.train_distill.loss.margin, ScoreScale::Given(3.0), "a nested section's key");
        assert_eq!(config.train_distill.loss.step_margin, defaults.train_distill.loss.step_margin);
        assert_eq!(defaults.train_distill.loss.margin, ScoreScale::Auto, "margins follow the student by default");

        // Margins are numbers or "auto", from a file or the environment; anything else, or a
        // negative number, is refused with its key named.
        unsafe { std::env::set_var("DGR_TRAIN_DISTILL__LOSS__STEP_MARGIN", "1e-1") };
        let config = load(Some(&user), Figment::new()).unwrap();
        assert_eq!(config.train_distill.loss.step_margin, ScoreScale::Given(0.1), "scientific notation");
        unsafe { std::env::set_var("DGR_TRAIN_DISTILL__LOSS__STEP_MARGIN", "auto") };
        let config = load(Some(&user), Figment::new()).unwrap();
        assert_eq!(config.train_distill.loss.step_margin, ScoreScale::Auto);
        unsafe { std::env::set_var("DGR_TRAIN_DISTILL__LOSS__STEP_MARGIN", "wide") };
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        // Figment names an environment key in capitals.
        assert!(
            err.to_lowercase().contains("step_margin") && err.contains("\"auto\"") && err.contains("wide"),
            "{err}"
        );
        unsafe { std::env::remove_var("DGR_TRAIN_DISTILL__LOSS__STEP_MARGIN") };
        for bad in ["margin = -20.0", "margin = \"automatic\"", "teacher_temperature = -1"] {
            std::fs::write(&user, format!("[train_distill.loss]\n{bad}\n")).unwrap();
            let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
            let key = bad.split(' ').next().unwrap();
            assert!(err.contains(key) && err.contains("user.toml") && err.contains("non-negative"), "{bad}: {err}");
        }
        std::fs::write(&user, "[train_distill.loss]\nstudent_temperature = 0\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("train_distill.loss.student_temperature must be positive"), "{err}");
        std::fs::write(&user, "[train_distill.loss.auto]\nmargin_quantile = 1.5\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("train_distill.loss.auto.margin_quantile"), "{err}");

        std::fs::write(&user, "[bm25]\ntop_kk = 50\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("top_kk"), "{err}");
        assert!(err.contains("user.toml"), "{err}");

        std::fs::write(&user, "[train_gen.engine]\nstepz = 5\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("stepz") && err.contains("user.toml"), "{err}");

        std::fs::write(&user, "[prepare]\nformat = \"trec-cd\"\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("trec-cd") && err.contains("user.toml"), "{err}");

        std::fs::write(&user, "[prepare.split]\ntrain = 90\ndev = 10\ntest = 10\n").unwrap();
        let err = crate::error::report(&load(Some(&user), Figment::new()).unwrap_err());
        assert!(err.contains("add up to 100"), "{err}");

        let err = crate::error::report(&load(Some(&dir.path().join("missing.toml")), Figment::new()).unwrap_err());
        assert!(err.contains("missing.toml"), "{err}");
    }
}
