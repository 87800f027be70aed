use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A model `config.json` that cannot be used.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// Weights that do not fit the model: missing, extra or mis-shaped tensors.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// The requested device cannot be used on this build or machine.
    #[error("{0}")]
    Device(String),
    #[error("cannot tokenize {text:?}: {message}")]
    Encode { text: String, message: String },
    /// A sequence over the length limit under the `error` policy (`text`: its first 80 characters).
    #[error("sequence longer than {max_length} tokens: {text:?} (raise the limit, or set the policy to truncate)")]
    TooLong { text: String, max_length: usize },
    /// Tensor values could not be read back from the device.
    #[error("cannot read tensor values back: {0}")]
    ReadBack(String),
}

/// The values of a float tensor, on the host.
pub fn host_values(data: burn::tensor::TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| ModelError::ReadBack(format!("{e:?}")))
}

/// Reads a model's `config.json` as `T`; `what` names the expected kind in the error.
pub(crate) fn read_json_config<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        action: "cannot read model config",
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::Config { path: path.to_path_buf(), message: format!("not a {what} config: {e}") })
}
