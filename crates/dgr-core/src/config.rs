//! Typed configuration sections of the stages this crate's neighbours run (each crate owns the
//! sections it uses; the program composes them into its file-level configuration), layered
//! with figment:
//!
//! 1. the embedded defaults (`configs/demo.toml`, compiled into the program),
//! 2. a user TOML file (`--config`),
//! 3. `DGR_` environment variables, `__` separating levels (`DGR_BM25__TOP_K=200`),
//! 4. command-line flags.
//!
//! Unknown keys are errors that name the key and where it came from.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::import::{DatasetFormat, SplitPercent};

/// The defaults every run starts from: the CPU demo on the wiki-vital set.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../../configs/demo.toml");

/// Where a job keeps its artefacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Job directory: `data/`, `bm25/`, `runs/`, `metrics.jsonl` live under it.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    pub format: DatasetFormat,
    /// Source file or directory (per format).
    pub input: PathBuf,
    /// Skip malformed records (counted in the summary) instead of failing.
    pub skip_invalid: bool,
    /// Split of queries for sources without splits (wiki-vital).
    pub split: SplitPercent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25Config {
    /// Documents retrieved per query.
    pub top_k: usize,
    /// Threads for indexing and search; 0 = all cores.
    pub threads: usize,
    /// Indexing memory budget in MB (split across threads).
    pub memory_mb: usize,
}

/// The FM-index of the corpus for generative retrieval (`dgr index`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// `tokenizer.json` of the student: the index holds its token ids.
    pub tokenizer: PathBuf,
    /// One text position in this many is stored for locate (memory against locate speed).
    pub sample_rate: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Splits the pipeline searches and evaluates.
    pub splits: Vec<String>,
    /// Cutoffs of Recall@k (qrels) and answer-hit R@k.
    pub recall_at: Vec<usize>,
}

/// The job service that leases shards of a stage to workers (`dgr coordinator`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on; loopback unless set otherwise.
    pub bind: String,
    /// Shared secret every request must carry (`Authorization: Bearer ...`); the `DGR_TOKEN`
    /// environment variable is used when this is empty.
    pub token: String,
    /// A lease not renewed by a heartbeat for this long expires and its shard goes to another
    /// worker.
    pub lease_seconds: f64,
    /// How often workers renew their lease.
    pub heartbeat_seconds: f64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// After the job is complete, keep answering for this long so that polling workers learn
    /// it is done.
    pub linger_seconds: f64,
}

/// A worker process (`dgr worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Give up when the coordinator has been unreachable this long (it may be restarting).
    pub retry_seconds: f64,
}

impl JobConfig {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn bm25_dir(&self) -> PathBuf {
        self.dir.join("bm25")
    }
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }
    pub fn stage1_dir(&self) -> PathBuf {
        self.dir.join("stage1")
    }
    /// A configured student directory, or (when `configured` is empty) the job's stage-1
    /// result, `stage1/weights/final`.
    pub fn student_or_stage1(&self, configured: &Path) -> PathBuf {
        if configured.as_os_str().is_empty() {
            self.stage1_dir().join("weights/final")
        } else {
            configured.to_path_buf()
        }
    }
    pub fn stage2_dir(&self) -> PathBuf {
        self.dir.join("stage2")
    }
    pub fn candidates_dir(&self) -> PathBuf {
        self.dir.join("candidates")
    }
    pub fn rank_lists_dir(&self) -> PathBuf {
        self.dir.join("rank_lists")
    }
    /// The coordinator's ledger databases, one per stage and split.
    pub fn coordinator_dir(&self) -> PathBuf {
        self.dir.join("coordinator")
    }
}

/// `DGR_TOKEN` is the coordinator's secret, read on its own, not a configuration key.
const TOKEN_VARIABLE_KEY: &str = "TOKEN";

/// Builds the layered configuration of type `T` (the file-level configuration its program
/// composes from the sections); `overrides` (from CLI flags) are merged last.
pub fn load<T: serde::de::DeserializeOwned>(user_file: Option<&Path>, overrides: Figment) -> Result<T> {
    let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS));
    if let Some(path) = user_file {
        if !path.is_file() {
            return Err(Error::format(path, "config file does not exist"));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed("DGR_").ignore(&[TOKEN_VARIABLE_KEY]).split("__")).merge(overrides);
    figment
        .extract()
        .map_err(|errors| Error::Config(errors.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))
}
