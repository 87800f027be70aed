//! HF `tokenizer.json` tokenizers with padding switched off (MiniLM's file fixes padding at 128)
//! and a length limit (the model's position table) that truncates or refuses, batching into
//! padded [`EncoderInput`]s.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::bert::EncoderInput;
use crate::error::{ModelError, Result};

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    overlong: Overlong,
}

/// What to do with a sequence longer than the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlong {
    /// Cut it to the limit (keeping the closing special token) and flag it `truncated`.
    #[default]
    Truncate,
    /// Refuse it with [`ModelError::TooLong`].
    Error,
}

/// Token ids of one sequence (or pair) before batching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether truncation cut tokens off.
    pub truncated: bool,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; sequences are truncated to `max_length` tokens (special tokens
    /// included), which must not exceed the model's position table.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let err = |message: String| ModelError::Tokenizer { path: path.to_path_buf(), message };
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None::<PaddingParams>);
        inner
            .with_truncation(Some(TruncationParams { max_length, ..TruncationParams::default() }))
            .map_err(|e| err(e.to_string()))?;
        Ok(TextTokenizer { inner, max_length, overlong: Overlong::Truncate })
    }

    /// Loads `tokenizer.json` for whole texts: no length limit, no special tokens added by
    /// [`TextTokenizer::tokens`] (what an index of the corpus needs).
    pub fn unlimited(path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Tokenizer { path: path.to_path_buf(), message };
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None::<PaddingParams>);
        inner.with_truncation(None).map_err(|e| err(e.to_string()))?;
        Ok(TextTokenizer { inner, max_length: usize::MAX, overlong: Overlong::Truncate })
    }

    /// Token ids of `texts` without special tokens, in parallel.
    pub fn tokens(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch(texts, false)
            .map_err(|e| ModelError::Encode { text: String::new(), message: e.to_string() })?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Size of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The same tokenizer with `overlong` as its policy for sequences over the limit.
    pub fn with_overlong(mut self, overlong: Overlong) -> Self {
        self.overlong = overlong;
        self
    }

    /// The id of a token of the vocabulary (e.g. `[CLS]`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The tokens this tokenizer puts around every sequence, `(start, end)`: `[CLS]` / `[SEP]`
    /// for BERT's, `<s>` / `</s>` for BART's. Identifiers the student generates end with `end`.
    pub fn sequence_marks(&self) -> Result<(u32, u32)> {
        let ids = self.encode("")?.ids;
        match ids.as_slice() {
            [start, .., end] => Ok((*start, *end)),
            _ => Err(ModelError::Encode {
                text: String::new(),
                message: "the tokenizer adds no start and end tokens around a sequence".into(),
            }),
        }
    }

    /// Ids of the tokenizer's special tokens (padding, unknown, mask, the sequence marks).
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> =
            self.inner.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// `text` between the tokenizer's sequence marks (`[CLS] text [SEP]` for BERT's).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.finish(text, self.inner.encode(text, true))
    }

    /// `[CLS] first [SEP] second [SEP]` with token types 0 and 1.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoded> {
        self.finish(first, self.inner.encode((first, second), true))
    }

    fn finish(&self, text: &str, encoding: tokenizers::Result<tokenizers::Encoding>) -> Result<Encoded> {
        let encoding = encoding.map_err(|e| ModelError::Encode { text: text.to_string(), message: e.to_string() })?;
        let truncated = !encoding.get_overflowing().is_empty();
        if truncated && self.overlong == Overlong::Error {
            let preview: String = text.chars().take(80).collect();
            return Err(ModelError::TooLong { text: preview, max_length: self.max_length });
        }
        Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec(), truncated })
    }
}

/// Pads `sequences` to the longest (pad id 0, mask 0) into one batch on `device`.
pub fn batch(sequences: &[Encoded], device: &Device) -> EncoderInput {
    let length = sequences.iter().map(|s| s.ids.len()).max().unwrap_or(0).max(1);
    let rows = sequences.len();
    let mut ids = vec![0i64; rows * length];
    let mut types = vec![0i64; rows * length];
    let mut mask = vec![0i64; rows * length];
    for (r, seq) in sequences.iter().enumerate() {
        for (i, (&id, &ty)) in seq.ids.iter().zip(&seq.type_ids).enumerate() {
            ids[r * length + i] = i64::from(id);
            types[r * length + i] = i64::from(ty);
            mask[r * length + i] = 1;
        }
    }
    let tensor = |values: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(values, [rows, length]), device);
    EncoderInput { input_ids: tensor(ids), token_type_ids: tensor(types), attention_mask: tensor(mask) }
}
