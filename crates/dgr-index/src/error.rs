use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("nothing to index: the corpus is empty")]
    Empty,
    #[error("symbol {symbol} is outside the alphabet of {alphabet} symbols")]
    Symbol { symbol: u16, alphabet: usize },
    /// A token id the index cannot hold (ids are stored as `id + 1` in 16 bits).
    #[error("passage {passage:?}: token id {token} is not below the vocabulary size {vocab_size}")]
    Token { passage: String, token: u32, vocab_size: u32 },
    #[error("vocabulary of {0} tokens is too large: at most 65,534 token ids fit the index")]
    Vocabulary(u32),
    #[error("cannot build the index: {0}")]
    Build(String),
    /// An index directory that is not what it claims to be.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Core(#[from] dgr_core::Error),
}
