//! BERT-family encoder (post-LN transformer with word, position and token-type embeddings),
//! shaped like HF `BertModel` so that its safetensors load by name.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// The fields of a HF BERT `config.json` this encoder uses. Unknown `model_type`s and
/// activations other than exact GELU are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    #[serde(default = "bert_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn bert_model_type() -> String {
    "bert".into()
}
fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}
fn absolute() -> String {
    "absolute".into()
}

/// Model types whose checkpoints load into this architecture by name.
const BERT_LIKE: [&str; 1] = ["bert"];

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            action: "cannot read model config",
            source,
        })?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not a BERT config: {e}"),
        })?;
        config.validate().map_err(|message| ModelError::Config { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if !BERT_LIKE.contains(&self.model_type.as_str()) {
            return Err(format!(
                "model_type `{}` is not supported by the BERT encoder (supported: {})",
                self.model_type,
                BERT_LIKE.join(", ")
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!("hidden_act `{}` is not supported (supported: gelu)", self.hidden_act));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (supported: absolute)",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> BertModel {
        let norm = || LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps).init(device);
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let h = self.hidden_size;
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: norm(),
            },
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: BertAttention {
                            self_attn: SelfAttention {
                                query: linear(h, h),
                                key: linear(h, h),
                                value: linear(h, h),
                                heads: self.num_attention_heads,
                            },
                            output: AddNorm { dense: linear(h, h), layer_norm: norm() },
                        },
                        intermediate: Intermediate { dense: linear(h, self.intermediate_size) },
                        output: AddNorm { dense: linear(self.intermediate_size, h), layer_norm: norm() },
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: Intermediate,
    pub output: AddNorm,
}

#[derive(Module, Debug)]
pub struct BertAttention {
    pub self_attn: SelfAttention,
    pub output: AddNorm,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub heads: usize,
}

/// `LayerNorm(dense(x) + residual)`: the output block of attention and of the feed-forward.
#[derive(Module, Debug)]
pub struct AddNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
}

/// A batch of token ids, all `[batch, length]`; `attention_mask` is 1 for tokens, 0 for padding.
#[derive(Debug, Clone)]
pub struct EncoderInput {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
}

impl BertModel {
    /// Last hidden states, `[batch, length, hidden]`.
    pub fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let [batch, length] = input.input_ids.dims();
        let device = input.input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..length as i64, &device)
            .reshape([1, length])
            .expand([batch, length]);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(input.input_ids.clone())
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(input.token_type_ids.clone());
        let mut x = e.layer_norm.forward(x);
        let heads = self.encoder.layer.first().map_or(1, |l| l.attention.self_attn.heads);
        // true = padding key, masked out; expanded to full shape for the autodiff path.
        let mask = input
            .attention_mask
            .clone()
            .equal_elem(0)
            .reshape([batch, 1, 1, length])
            .expand([batch, heads, length, length]);
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask.clone());
        }
        x
    }
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let attended = self.attention.self_attn.forward(x.clone(), mask);
        let x = self.attention.output.forward(attended, x);
        let hidden = gelu(self.intermediate.dense.forward(x.clone()));
        self.output.forward(hidden, x)
    }
}

impl SelfAttention {
    fn forward(&self, x: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let [batch, length, hidden] = x.dims();
        let split = |t: Tensor<3>| t.reshape([batch, length, self.heads, hidden / self.heads]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let context = attention(q, k, v, Some(mask), None, AttentionModuleOptions::default());
        context.swap_dims(1, 2).reshape([batch, length, hidden])
    }
}

impl AddNorm {
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}
