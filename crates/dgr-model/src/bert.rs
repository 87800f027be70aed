//! BERT-family encoder (post-LN transformer with word, position and token-type embeddings),
//! shaped like HF `BertModel` so that its safetensors load by name. ELECTRA discriminators are
//! the same encoder, with embeddings of their own width projected to the hidden size.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The fields of a HF BERT `config.json` this encoder uses. Unknown `model_type`s and
/// activations other than exact GELU are refused.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Width of the embeddings (ELECTRA); when it differs from `hidden_size`, a linear
    /// `embeddings_project` maps them to the hidden size. Absent: `hidden_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// Standard deviation of fresh weights (a model built from scratch, or the parts a warm
    /// start adds).
    #[serde(default = "bert_init_std")]
    pub initializer_range: f64,
}

fn bert_init_std() -> f64 {
    0.02
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
const BERT_LIKE: [&str; 2] = ["bert", "electra"];

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: BertConfig = crate::error::read_json_config(path, "BERT")?;
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

    /// Width of the embedding tables.
    pub fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// An encoder with fresh weights.
    pub fn init(&self, device: &Device) -> BertModel {
        let width = self.embedding_width();
        BertModel {
            embeddings: self.init_embeddings(device),
            embeddings_project: (width != self.hidden_size).then(|| self.init_linear(width, self.hidden_size, device)),
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: self.init_attention(device),
                        intermediate: self.init_intermediate(device),
                        output: self.init_add_norm(self.intermediate_size, device),
                    })
                    .collect(),
            },
        }
    }

    pub(crate) fn init_embeddings(&self, device: &Device) -> BertEmbeddings {
        let width = self.embedding_width();
        let embedding = |n| crate::init::embedding(n, width, self.initializer_range, device);
        BertEmbeddings {
            word_embeddings: embedding(self.vocab_size),
            position_embeddings: embedding(self.max_position_embeddings),
            token_type_embeddings: embedding(self.type_vocab_size),
            layer_norm: LayerNormConfig::new(width).with_epsilon(self.layer_norm_eps).init(device),
        }
    }

    pub(crate) fn init_norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps).init(device)
    }

    pub(crate) fn init_linear(&self, input: usize, output: usize, device: &Device) -> Linear {
        crate::init::linear(input, output, self.initializer_range, device)
    }

    pub(crate) fn init_attention(&self, device: &Device) -> BertAttention {
        let h = self.hidden_size;
        BertAttention {
            self_attn: SelfAttention {
                query: self.init_linear(h, h, device),
                key: self.init_linear(h, h, device),
                value: self.init_linear(h, h, device),
                heads: self.num_attention_heads,
            },
            output: self.init_add_norm(h, device),
        }
    }

    pub(crate) fn init_intermediate(&self, device: &Device) -> Intermediate {
        Intermediate { dense: self.init_linear(self.hidden_size, self.intermediate_size, device) }
    }

    pub(crate) fn init_add_norm(&self, input: usize, device: &Device) -> AddNorm {
        AddNorm { dense: self.init_linear(input, self.hidden_size, device), layer_norm: self.init_norm(device) }
    }
}

#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    /// ELECTRA's projection of narrower embeddings to the hidden size.
    pub embeddings_project: Option<Linear>,
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

impl BertEmbeddings {
    /// `LayerNorm(word + position + token type)`, positions counted from 0.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        self.forward_at(input_ids, token_type_ids, 0)
    }

    /// As [`BertEmbeddings::forward`], with positions counted from `start` (incremental decoding).
    pub fn forward_at(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let [batch, length] = input_ids.dims();
        let start = start as i64;
        let positions = Tensor::<1, Int>::arange(start..start + length as i64, &input_ids.device())
            .reshape([1, length])
            .expand([batch, length]);
        self.forward_positions(input_ids, token_type_ids, positions)
    }

    /// As [`BertEmbeddings::forward`], with the position id of every token given (`[batch,
    /// length]`; tokens laid out as a tree take their depth).
    pub fn forward_positions(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
    ) -> Tensor<3> {
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.layer_norm.forward(x)
    }
}

/// `[batch, heads, queries, keys]`, true where a key is padding (masked out); expanded to full
/// shape for the autodiff path.
pub(crate) fn padding_mask(mask: &Tensor<2, Int>, heads: usize, queries: usize) -> Tensor<4, Bool> {
    let [batch, keys] = mask.dims();
    mask.clone().equal_elem(0).reshape([batch, 1, 1, keys]).expand([batch, heads, queries, keys])
}

impl BertModel {
    /// Last hidden states, `[batch, length, hidden]`.
    pub fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let length = input.input_ids.dims()[1];
        let mut x = self.embeddings.forward(input.input_ids.clone(), input.token_type_ids.clone());
        if let Some(project) = &self.embeddings_project {
            x = project.forward(x);
        }
        let heads = self.encoder.layer.first().map_or(1, |l| l.attention.self_attn.heads);
        let mask = padding_mask(&input.attention_mask, heads, length);
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask.clone());
        }
        x
    }
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let x = self.attention.forward(x.clone(), x, mask);
        self.feed_forward(x)
    }

    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.output.forward(self.intermediate.forward(x.clone()), x)
    }
}

impl BertAttention {
    /// Attention of `x` over `memory` (itself for self-attention), then add & norm.
    pub(crate) fn forward(&self, x: Tensor<3>, memory: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let attended = self.self_attn.forward(x.clone(), memory, mask);
        self.output.forward(attended, x)
    }
}

impl SelfAttention {
    /// `x [B, Lq, d]` attends to `memory [B, Lk, d]`; `mask [B, heads, Lq, Lk]`.
    fn forward(&self, x: Tensor<3>, memory: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let (k, v) = self.keys_values(memory);
        self.attend(x, k, v, Some(mask))
    }

    /// Projected keys and values of `memory [B, L, d]`, each `[B, heads, L, d / heads]`.
    pub(crate) fn keys_values(&self, memory: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (self.split_heads(self.key.forward(memory.clone())), self.split_heads(self.value.forward(memory)))
    }

    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, length, hidden] = x.dims();
        x.reshape([batch, length, self.heads, hidden / self.heads]).swap_dims(1, 2)
    }

    /// Attention of `x [B, Lq, d]` over projected keys and values; `mask [B, heads, Lq, Lk]`.
    pub(crate) fn attend(&self, x: Tensor<3>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, lq, hidden] = x.dims();
        let q = self.split_heads(self.query.forward(x));
        let context = attention(q, k, v, mask, None, AttentionModuleOptions::default());
        context.swap_dims(1, 2).reshape([batch, lq, hidden])
    }
}

impl AddNorm {
    pub(crate) fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

impl Intermediate {
    pub(crate) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        gelu(self.dense.forward(x))
    }
}
