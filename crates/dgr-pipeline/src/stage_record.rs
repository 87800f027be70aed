//! `<job.dir>/stages/<stage>.json`: what a stage of `dgr run` last ran on and whether it
//! finished. A stage is up to date when its record says done with the fingerprint of today's
//! inputs and settings, and its outputs are there; a record still `running` with the same
//! fingerprint is a stage to resume.

use std::path::{Path, PathBuf};

use dgr_core::atomic::write_atomic;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result, bail, if_present};

pub const RECORD_FORMAT: &str = "dgr.stage";
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Running,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    /// Always `dgr.stage`.
    pub format: String,
    pub version: u32,
    pub stage: String,
    /// SHA-256 of `inputs` as JSON.
    pub fingerprint: String,
    /// What the stage's output depends on: the fingerprints of the stages it reads, its
    /// settings, and checksums of outside files (source data, pretrained weights).
    pub inputs: serde_json::Value,
    pub state: StageState,
    pub started_unix_s: u64,
    pub finished_unix_s: Option<u64>,
    /// Wall time of the run that finished it (a resumed stage counts its last run only).
    pub seconds: Option<f64>,
    /// Program that wrote it, e.g. `dgr 0.1.0`.
    pub program: String,
}

/// The fingerprint of a stage's inputs.
pub fn fingerprint(inputs: &serde_json::Value) -> String {
    dgr_core::import::sha256_hex(inputs.to_string().as_bytes())
}

pub fn records_dir(job_dir: &Path) -> PathBuf {
    job_dir.join("stages")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl StageRecord {
    /// A record of `stage` starting now on `inputs`.
    pub fn started(stage: &str, inputs: serde_json::Value) -> Self {
        StageRecord {
            format: RECORD_FORMAT.into(),
            version: RECORD_VERSION,
            stage: stage.to_string(),
            fingerprint: fingerprint(&inputs),
            inputs,
            state: StageState::Running,
            started_unix_s: now(),
            finished_unix_s: None,
            seconds: None,
            program: concat!("dgr ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    pub fn path(job_dir: &Path, stage: &str) -> PathBuf {
        records_dir(job_dir).join(format!("{stage}.json"))
    }

    /// The stage's record, if it has one; a record that is not one is an error naming it.
    pub fn load(job_dir: &Path, stage: &str) -> Result<Option<Self>> {
        let path = Self::path(job_dir, stage);
        let Some(bytes) = if_present(std::fs::read(&path), &path)? else { return Ok(None) };
        let record: StageRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a stage record (remove it to rerun the stage)", path.display()))?;
        if record.format != RECORD_FORMAT || record.version != RECORD_VERSION {
            bail!(
                "{}: format {} version {}, this program reads {RECORD_FORMAT} version {RECORD_VERSION}",
                path.display(),
                record.format,
                record.version
            );
        }
        Ok(Some(record))
    }

    /// Every record of the job, in no particular order.
    pub fn load_all(job_dir: &Path) -> Result<Vec<Self>> {
        let dir = records_dir(job_dir);
        let Some(entries) = if_present(std::fs::read_dir(&dir), &dir)? else { return Ok(Vec::new()) };
        let mut records = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stage) = name.strip_suffix(".json")
                && let Some(record) = Self::load(job_dir, stage)?
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    pub fn write(&self, job_dir: &Path) -> Result<()> {
        let path = Self::path(job_dir, &self.stage);
        let dir = records_dir(job_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&path, format!("{}\n", serde_json::to_string_pretty(self)?).as_bytes())?;
        Ok(())
    }

    /// The record marked done, `seconds` after it started.
    pub fn done(mut self, seconds: f64) -> Self {
        self.state = StageState::Done;
        self.finished_unix_s = Some(now());
        self.seconds = Some(seconds);
        self
    }
}
