//! Loading HF safetensors into our modules: names are remapped to our field names, PyTorch
//! `[out, in]` linear weights are transposed, and any missing or mis-shaped tensor is an error
//! that names the tensor (and both shapes).

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use crate::error::{ModelError, Result};

/// HF BERT names that are not valid or not idiomatic Rust field names.
const BERT_NAMES: [(&str, &str); 3] = [
    (r"\.LayerNorm\.", ".layer_norm."),
    (r"\.attention\.self\.", ".attention.self_attn."),
    (r"\.crossattention\.self\.", ".crossattention.self_attn."),
];

/// What a load used and what it left out.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub applied: usize,
    /// Tensors of the file the model has no place for (e.g. a pooler a bi-encoder ignores).
    pub unused: Vec<String>,
}

/// Loads `path` into `module`; every tensor of the module must be in the file. `remaps`
/// (regex, replacement) run in order after the BERT name fixes, on the file's tensor names.
pub fn load_safetensors<M: ModuleSnapshot>(module: &mut M, path: &Path, remaps: &[(&str, &str)]) -> Result<LoadReport> {
    load(module, path, remaps, |_| true)
}

/// Loads the part of `module` under `part` (a regex on our tensor paths) from `path`; tensors
/// matching one of `fresh` keep their initial values, any other missing tensor of `part` is an
/// error, and tensors outside `part` are left alone.
pub fn load_safetensors_partial<M: ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remaps: &[(&str, &str)],
    part: &str,
    fresh: &[&str],
) -> Result<LoadReport> {
    let regex = |p: &str| {
        regex::Regex::new(p)
            .map_err(|e| ModelError::Weights { path: path.to_path_buf(), message: format!("bad pattern {p:?}: {e}") })
    };
    let part = regex(part)?;
    let fresh = fresh.iter().map(|p| regex(p)).collect::<Result<Vec<_>>>()?;
    load(module, path, remaps, |missing| part.is_match(missing) && !fresh.iter().any(|f| f.is_match(missing)))
}

fn load<M: ModuleSnapshot>(
    module: &mut M,
    path: &Path,
    remaps: &[(&str, &str)],
    required: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    if !path.is_file() {
        return Err(ModelError::Weights { path: path.to_path_buf(), message: "weights file not found".into() });
    }
    let mut store =
        SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true).validate(false);
    for (from, to) in BERT_NAMES.iter().chain(remaps) {
        store = store.with_key_remapping(*from, *to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| ModelError::Weights { path: path.to_path_buf(), message: e.to_string() })?;
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
        return Err(ModelError::Weights { path: path.to_path_buf(), message: errors.join("; ") });
    }
    let missing: Vec<&str> =
        result.missing.iter().map(|(name, _)| name.as_str()).filter(|name| required(name)).collect();
    if !missing.is_empty() {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            message: format!("missing tensors: {}", missing.join(", ")),
        });
    }
    if !result.unused.is_empty() {
        tracing::debug!(unused = ?result.unused, "tensors of the file the model does not use");
    }
    Ok(LoadReport { applied: result.applied.len(), unused: result.unused })
}

/// Saves `module` as PyTorch-layout safetensors (`[out, in]` linear weights, `weight`/`bias`
/// norm names), `remaps` (regex, replacement) renaming our paths to the checkpoint's names.
/// Written to a temporary name and renamed, so `path` is never half-written.
pub fn save_safetensors<M: ModuleSnapshot>(module: &M, path: &Path, remaps: &[(&str, &str)]) -> Result<()> {
    let err = |message: String| ModelError::Weights { path: path.to_path_buf(), message };
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".partial");
    let temp = std::path::PathBuf::from(temp_name);
    // One metadata entry: several would be written in a map's random order, and the same
    // weights would not give the same bytes twice.
    let mut store = SafetensorsStore::from_file(&temp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .overwrite(true)
        .clear_metadata()
        .metadata("format", "safetensors");
    for (from, to) in remaps {
        store = store.with_key_remapping(*from, *to);
    }
    let saved = module.save_into(&mut store).map_err(|e| err(e.to_string()));
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        action: "cannot rename weights into place",
        source,
    })
}

/// Writes a HF-style model directory: `config.json` (written whole, then renamed) and
/// `model.safetensors` via [`save_safetensors`].
pub fn save_model_dir<M: ModuleSnapshot>(
    module: &M,
    dir: &Path,
    config: &serde_json::Value,
    remaps: &[(&str, &str)],
) -> Result<()> {
    let config_path = dir.join("config.json");
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        action: "cannot create model directory",
        source,
    })?;
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| ModelError::Config { path: config_path.clone(), message: e.to_string() })?;
    let temp = dir.join(".config.json.partial");
    std::fs::write(&temp, text)
        .and_then(|_| std::fs::rename(&temp, &config_path))
        .map_err(|source| ModelError::Io { path: config_path.clone(), action: "cannot write", source })?;
    save_safetensors(module, &dir.join("model.safetensors"), remaps)
}
