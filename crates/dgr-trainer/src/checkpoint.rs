//! Training checkpoints that a run resumes from exactly (`<stage>/checkpoints/step-NNNNNNN/`).
//!
//! A checkpoint holds the student's weights (`model/`, loadable by HF and by `dgr`), the AdamW
//! moments (`optimizer.bpk`, Burn's burnpack), and `state.json`: the step, the data cursor, the
//! seed, the parameter ids the optimiser state is keyed by, the resolved settings, the inputs'
//! fingerprint and the parameter shapes. `manifest.json`, written last, lists every file with its
//! size and SHA-256. The directory is built under a temporary name and renamed into place, then
//! `latest` names it. A reader trusts a checkpoint only when its manifest and every checksum
//! hold; a damaged or incomplete one is skipped (with a warning) for the one before it.
//!
//! Randomness needs no saved generator state: the data order of epoch `e` and the sampling of
//! step `k` come from generators seeded by `(seed, e)` and `(seed, k)`, so the step and the
//! cursor determine every draw that follows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Tensor};
use dgr_core::atomic::{StagingDir, write_atomic};
use dgr_core::import::sha256_file;
use dgr_model::student::{Student, StudentConfig};
use serde::{Deserialize, Serialize};
use tracing::warn;

pub const CHECKPOINT_FORMAT: &str = "dgr.checkpoint";
pub const CHECKPOINT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.bpk";
const MODEL: &str = "model";
const LATEST: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path}: this checkpoint belongs to another run: {differences}; start over with --fresh or use another job directory"
    )]
    Mismatch { path: PathBuf, differences: String },
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
    #[error(transparent)]
    Model(#[from] dgr_model::ModelError),
}

/// Where the next example comes from: position `position` of epoch `epoch`'s permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub position: u64,
}

/// What makes a run this run: its inputs' fingerprint (name → checksum or identity) and its
/// resolved settings. Inputs must match to resume; settings may change (and are reported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunIdentity {
    pub fingerprint: BTreeMap<String, String>,
    pub settings: serde_json::Value,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: String,
    pub version: u32,
    /// Optimisation steps completed.
    pub step: u64,
    pub cursor: Cursor,
    pub seed: u64,
    pub identity: RunIdentity,
    /// `(parameter path, shape)` in module order.
    pub parameters: Vec<(String, Vec<usize>)>,
    /// The ids the optimiser state is keyed by, in the same order.
    pub parameter_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointManifest {
    format: String,
    version: u32,
    step: u64,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    bytes: u64,
    sha256: String,
}

/// A checkpoint read back: the model with its parameter ids restored, so the optimiser state
/// applies to it.
pub struct Restored {
    pub model: Student,
    pub optimizer: ModuleOptimizer,
    pub state: CheckpointState,
    pub dir: PathBuf,
}

/// `step-NNNNNNN`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// Writes a checkpoint of `step` into `dir` (`<stage>/checkpoints`), points `latest` at it and
/// removes all but the newest `keep` checkpoints. Returns its directory and the bytes of its
/// files.
#[allow(clippy::too_many_arguments)]
pub fn write_checkpoint(
    dir: &Path,
    model: &Student,
    model_config: &StudentConfig,
    optimizer: &ModuleOptimizer,
    step: u64,
    cursor: Cursor,
    seed: u64,
    identity: &RunIdentity,
    keep: usize,
) -> Result<(PathBuf, u64), CheckpointError> {
    let name = checkpoint_name(step);
    let dest = dir.join(&name);
    let staging = StagingDir::create(&dest, true)?;
    let root = staging.path();
    model.save(&root.join(MODEL), model_config)?;
    let bytes = optimizer
        .into_bytes()
        .map_err(|e| CheckpointError::Invalid { path: root.join(OPTIMIZER), message: format!("{e:?}") })?;
    write_atomic(&root.join(OPTIMIZER), &bytes)?;
    let parameters = parameters(model);
    let state = CheckpointState {
        format: CHECKPOINT_FORMAT.into(),
        version: CHECKPOINT_VERSION,
        step,
        cursor,
        seed,
        identity: identity.clone(),
        parameter_ids: parameters.iter().map(|p| p.2).collect(),
        parameters: parameters.into_iter().map(|(path, shape, _)| (path, shape)).collect(),
    };
    write_atomic(&root.join(STATE), &to_json(&state))?;
    let mut files = Vec::new();
    for path in [format!("{MODEL}/config.json"), format!("{MODEL}/model.safetensors"), OPTIMIZER.into(), STATE.into()] {
        let (bytes, sha256) = sha256_file(&root.join(&path))?;
        files.push(ManifestFile { path, bytes, sha256 });
    }
    let total_bytes = files.iter().map(|f| f.bytes).sum();
    let manifest = CheckpointManifest { format: CHECKPOINT_FORMAT.into(), version: CHECKPOINT_VERSION, step, files };
    write_atomic(&root.join(MANIFEST), &to_json(&manifest))?;
    staging.commit()?;
    write_atomic(&dir.join(LATEST), format!("{name}\n").as_bytes())?;
    for old in checkpoint_dirs(dir).into_iter().skip(keep.max(1)) {
        if let Err(error) = std::fs::remove_dir_all(&old.1) {
            warn!(dir = %old.1.display(), %error, "cannot remove an old checkpoint");
        }
    }
    Ok((dest, total_bytes))
}

/// The newest checkpoint under `dir` whose files all check out, restored onto `device`, after
/// checking that it belongs to a run with `identity`'s inputs and `model`'s parameter shapes.
/// Damaged or incomplete checkpoints are skipped with a warning; `None` when there is none.
pub fn restore_latest(
    dir: &Path,
    identity: &RunIdentity,
    model: &Student,
    optimizer: ModuleOptimizer,
    device: &burn::tensor::Device,
) -> Result<Option<Restored>, CheckpointError> {
    for (_, path) in checkpoint_dirs(dir) {
        let state = match verify(&path) {
            Ok(state) => state,
            Err(error) => {
                warn!(checkpoint = %path.display(), %error, "skipping a damaged or incomplete checkpoint");
                continue;
            }
        };
        check_same_run(&path, &state, identity, model)?;
        let (loaded, _) = Student::load(&path.join(MODEL), device)?;
        let model = loaded.map(&mut SetIds { ids: state.parameter_ids.iter().copied() });
        let bytes = std::fs::read(path.join(OPTIMIZER))
            .map_err(|e| CheckpointError::Invalid { path: path.join(OPTIMIZER), message: e.to_string() })?;
        let optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| CheckpointError::Invalid { path: path.join(OPTIMIZER), message: format!("{e:?}") })?;
        return Ok(Some(Restored { model, optimizer, state, dir: path }));
    }
    Ok(None)
}

/// The state of the newest checkpoint whose manifest and `state.json` check out, read without
/// hashing or loading the model and optimiser (what [`restore_latest`] does next): what a run
/// needs to know before it builds one. Every checkpoint of a run carries the same resolved
/// settings, so one whose weights turn out damaged gives what the one before it would.
pub fn latest_state(dir: &Path) -> Option<CheckpointState> {
    checkpoint_dirs(dir).into_iter().find_map(|(_, path)| checked_state(&path, |file| file == STATE).ok())
}

/// Checkpoint directories `step-*` under `dir`, newest first (temporary ones are hidden).
fn checkpoint_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().is_dir().then(|| (step, e.path()))
        })
        .collect();
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    found
}

/// Reads the manifest and checks every file it lists, then reads the state.
fn verify(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    checked_state(dir, |_| true)
}

/// Reads the manifest and checks the files it lists that `check` names, then reads the state.
fn checked_state(dir: &Path, check: impl Fn(&str) -> bool) -> Result<CheckpointState, CheckpointError> {
    let manifest: CheckpointManifest = read_json(&dir.join(MANIFEST))?;
    if manifest.format != CHECKPOINT_FORMAT || manifest.version != CHECKPOINT_VERSION {
        return Err(invalid(
            &dir.join(MANIFEST),
            format!(
                "format {} v{} (this program reads {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION})",
                manifest.format, manifest.version
            ),
        ));
    }
    for file in manifest.files.iter().filter(|f| check(&f.path)) {
        let path = dir.join(&file.path);
        if !path.is_file() {
            return Err(invalid(&path, "missing".into()));
        }
        let (bytes, sha256) = sha256_file(&path)?;
        if bytes != file.bytes || sha256 != file.sha256 {
            return Err(invalid(
                &path,
                format!("sha256 {sha256} ({bytes} bytes), the manifest says {} ({} bytes)", file.sha256, file.bytes),
            ));
        }
    }
    for required in [STATE, OPTIMIZER] {
        if !manifest.files.iter().any(|f| f.path == required) {
            return Err(invalid(&dir.join(MANIFEST), format!("does not list {required}")));
        }
    }
    let state: CheckpointState = read_json(&dir.join(STATE))?;
    if state.step != manifest.step || state.parameters.len() != state.parameter_ids.len() {
        return Err(invalid(&dir.join(STATE), "disagrees with the manifest".into()));
    }
    Ok(state)
}

/// Refuses a checkpoint of other inputs or another model shape, naming what differs; changed
/// settings are only reported.
fn check_same_run(
    path: &Path,
    state: &CheckpointState,
    identity: &RunIdentity,
    model: &Student,
) -> Result<(), CheckpointError> {
    let mut differences = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        state.identity.fingerprint.keys().chain(identity.fingerprint.keys()).collect();
    for key in keys {
        let (then, now) = (state.identity.fingerprint.get(key), identity.fingerprint.get(key));
        if then != now {
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| v.clone());
            differences.push(format!("input `{key}` was {} and is now {}", show(then), show(now)));
        }
    }
    let current: Vec<(String, Vec<usize>)> = parameters(model).into_iter().map(|(p, s, _)| (p, s)).collect();
    if current.len() != state.parameters.len() {
        differences.push(format!(
            "the model has {} parameter tensors, the checkpoint {}",
            current.len(),
            state.parameters.len()
        ));
    } else if let Some((now, then)) = current.iter().zip(&state.parameters).find(|(a, b)| a != b) {
        differences
            .push(format!("parameter {} has shape {:?}, in the checkpoint {} {:?}", now.0, now.1, then.0, then.1));
    }
    if !differences.is_empty() {
        return Err(CheckpointError::Mismatch { path: path.to_path_buf(), differences: differences.join("; ") });
    }
    let changed = changed_settings(&state.identity.settings, &identity.settings, "");
    if !changed.is_empty() {
        warn!(checkpoint = %path.display(), changed = changed.join(", "), "resuming with changed settings");
    }
    Ok(())
}

/// Dotted names of the settings that differ between two JSON values.
fn changed_settings(then: &serde_json::Value, now: &serde_json::Value, prefix: &str) -> Vec<String> {
    match (then, now) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    let null = serde_json::Value::Null;
                    changed_settings(a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null), &name)
                })
                .collect()
        }
        _ if then == now => Vec::new(),
        _ => vec![prefix.to_string()],
    }
}

/// `(path, shape, id)` of every float parameter, in module order.
fn parameters<M: Module>(model: &M) -> Vec<(String, Vec<usize>, u64)> {
    let mut visitor = Parameters { path: Vec::new(), found: Vec::new() };
    model.visit(&mut visitor);
    visitor.found
}

struct Parameters {
    path: Vec<String>,
    found: Vec<(String, Vec<usize>, u64)>,
}

impl ModuleVisitor for Parameters {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found.push((self.path.join("."), param.val().dims().to_vec(), param.id.val()));
    }
}

/// Gives the parameters the ids they had when the checkpoint was written, in module order.
/// (Shapes were checked against the checkpoint first, so there is one id per parameter.)
struct SetIds<I: Iterator<Item = u64>> {
    ids: I,
}

impl<I: Iterator<Item = u64>> ModuleMapper for SetIds<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(id) = self.ids.next() else { return param };
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(id), tensor, mapper)
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("not a valid file: {e}")))
}

fn invalid(path: &Path, message: String) -> CheckpointError {
    CheckpointError::Invalid { path: path.to_path_buf(), message }
}
