//! The student: a BART-compatible encoder-decoder (post-LN layers, learned positions with an
//! offset of 2, `layernorm_embedding`, LM head tied to the shared embedding plus
//! `final_logits_bias`), shaped like HF `BartForConditionalGeneration` so its safetensors load
//! by name. It gives the generation loss and teacher-forced scores of identifier keys
//! (method §4), both differentiable.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::key_trie::KeyTrie;
use crate::weights::{LoadReport, load_safetensors, save_model_dir};

/// BART learned positions start at index 2 (HF `BartLearnedPositionalEmbedding`).
const POSITION_OFFSET: usize = 2;
/// Label value that marks a position without a target (as in PyTorch / HF).
pub const IGNORE_LABEL: i64 = -100;

/// The fields of a HF BART `config.json` the student uses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Seq2SeqConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "gelu_name")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    pub pad_token_id: u32,
    pub decoder_start_token_id: u32,
    #[serde(default)]
    pub normalize_before: bool,
    /// Standard deviation of the normal initialisation of a model built from scratch
    /// (weights and embeddings; biases start at 0), as HF BART.
    #[serde(default = "bart_init_std")]
    pub init_std: f64,
}

fn gelu_name() -> String {
    "gelu".into()
}

fn bart_init_std() -> f64 {
    0.02
}

impl Seq2SeqConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Seq2SeqConfig = crate::error::read_json_config(path, "BART")?;
        config.validate().map_err(|message| ModelError::Config { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.model_type != "bart" {
            return Err(format!("model_type `{}` is not supported by the student (supported: bart)", self.model_type));
        }
        if self.activation_function != "gelu" {
            return Err(format!(
                "activation_function `{}` is not supported (supported: gelu)",
                self.activation_function
            ));
        }
        if self.normalize_before {
            return Err("normalize_before = true (pre-LN, mBART-style) is not supported".into());
        }
        for (heads, name) in [(self.encoder_attention_heads, "encoder"), (self.decoder_attention_heads, "decoder")] {
            if heads == 0 || !self.d_model.is_multiple_of(heads) {
                return Err(format!("d_model {} is not a multiple of {name}_attention_heads {heads}", self.d_model));
            }
        }
        Ok(())
    }

    /// A model with fresh weights (normal with `init_std`, zero biases, unit layer norms).
    pub fn init(&self, device: &Device) -> Seq2Seq {
        let d = self.d_model;
        let linear = |i, o| crate::init::linear(i, o, self.init_std, device);
        let embedding = |n| crate::init::embedding(n, d, self.init_std, device);
        let norm = || LayerNormConfig::new(d).init(device);
        let attn = |heads| MultiHeadAttention {
            q_proj: linear(d, d),
            k_proj: linear(d, d),
            v_proj: linear(d, d),
            out_proj: linear(d, d),
            heads,
        };
        let positions = || embedding(self.max_position_embeddings + POSITION_OFFSET);
        let encoder_layer = || EncoderLayer {
            self_attn: attn(self.encoder_attention_heads),
            self_attn_layer_norm: norm(),
            fc1: linear(d, self.encoder_ffn_dim),
            fc2: linear(self.encoder_ffn_dim, d),
            final_layer_norm: norm(),
        };
        let decoder_layer = || DecoderLayer {
            self_attn: attn(self.decoder_attention_heads),
            self_attn_layer_norm: norm(),
            encoder_attn: attn(self.decoder_attention_heads),
            encoder_attn_layer_norm: norm(),
            fc1: linear(d, self.decoder_ffn_dim),
            fc2: linear(self.decoder_ffn_dim, d),
            final_layer_norm: norm(),
        };
        Seq2Seq {
            shared: embedding(self.vocab_size),
            encoder: Encoder {
                embed_positions: positions(),
                layernorm_embedding: norm(),
                layers: (0..self.encoder_layers).map(|_| encoder_layer()).collect(),
            },
            decoder: Decoder {
                embed_positions: positions(),
                layernorm_embedding: norm(),
                layers: (0..self.decoder_layers).map(|_| decoder_layer()).collect(),
            },
            final_logits_bias: Param::from_tensor(Tensor::zeros([1, self.vocab_size], device)),
            embed_scale: if self.scale_embedding { (d as f64).sqrt() } else { 1.0 },
            decoder_start: self.decoder_start_token_id,
        }
    }
}

#[derive(Module, Debug)]
pub struct Seq2Seq {
    /// Token embedding of encoder and decoder, and (transposed) the LM head.
    pub shared: Embedding,
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// `[1, vocab]`, added to the logits.
    pub final_logits_bias: Param<Tensor<2>>,
    pub embed_scale: f64,
    pub decoder_start: u32,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub embed_positions: Embedding,
    pub layernorm_embedding: LayerNorm,
    pub layers: Vec<EncoderLayer>,
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub embed_positions: Embedding,
    pub layernorm_embedding: LayerNorm,
    pub layers: Vec<DecoderLayer>,
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub self_attn: MultiHeadAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: MultiHeadAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub encoder_attn: MultiHeadAttention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl MultiHeadAttention {
    /// `query [B, Lq, d]` attends to `memory [B, Lk, d]`; `mask [B, Lq, Lk]` is true where a
    /// key must not be seen.
    fn forward(&self, query: Tensor<3>, memory: Tensor<3>, mask: Tensor<3, Bool>) -> Tensor<3> {
        let [batch, lq, lk] = mask.dims();
        let (k, v) = self.keys_values(memory);
        let mask = mask.reshape([batch, 1, lq, lk]).expand([batch, self.heads, lq, lk]);
        self.attend(query, k, v, Some(mask))
    }

    /// Projected keys and values of `memory [B, L, d]`, each `[B, heads, L, d / heads]`.
    fn keys_values(&self, memory: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (self.split_heads(self.k_proj.forward(memory.clone())), self.split_heads(self.v_proj.forward(memory)))
    }

    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, length, d] = x.dims();
        x.reshape([batch, length, self.heads, d / self.heads]).swap_dims(1, 2)
    }

    /// Attention of `query [B, Lq, d]` over projected keys and values; `mask [B, heads, Lq, Lk]`.
    fn attend(&self, query: Tensor<3>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, lq, d] = query.dims();
        let q = self.split_heads(self.q_proj.forward(query));
        let context = attention(q, k, v, mask, None, AttentionModuleOptions::default());
        self.out_proj.forward(context.swap_dims(1, 2).reshape([batch, lq, d]))
    }
}

/// Decoding state of a batch of beams: per decoder layer the keys and values of the tokens
/// decoded so far and of the source. Beams are rows; [`DecoderCache::reorder`] follows the
/// beam search's choice of parents.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    self_kv: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    cross_kv: Vec<(Tensor<4>, Tensor<4>)>,
    /// `[beams, heads, 1, source]`, true at source padding.
    cross_mask: Tensor<4, Bool>,
    /// Tokens decoded so far (the next token's position).
    pub length: usize,
}

impl DecoderCache {
    /// A cache with nothing decoded yet: `cross_kv` holds each layer's projected source keys and
    /// values, `mask [beams, source]` is 1 for source tokens, 0 for padding.
    pub(crate) fn new(cross_kv: Vec<(Tensor<4>, Tensor<4>)>, mask: &Tensor<2, Int>, heads: usize) -> Self {
        let [beams, source] = mask.dims();
        DecoderCache {
            self_kv: vec![None; cross_kv.len()],
            cross_kv,
            cross_mask: mask.clone().equal_elem(0).reshape([beams, 1, 1, source]).expand([beams, heads, 1, source]),
            length: 0,
        }
    }

    /// Appends the new token's keys and values to layer `layer`'s history and returns the whole
    /// history, `[beams, heads, length, d / heads]` each.
    pub(crate) fn push_self(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.self_kv[layer].take() {
            Some((past_k, past_v)) => (Tensor::cat(vec![past_k, k], 2), Tensor::cat(vec![past_v, v], 2)),
            None => (k, v),
        };
        self.self_kv[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Layer `layer`'s source keys and values and the source padding mask.
    pub(crate) fn cross(&self, layer: usize) -> (Tensor<4>, Tensor<4>, Tensor<4, Bool>) {
        let (k, v) = self.cross_kv[layer].clone();
        (k, v, self.cross_mask.clone())
    }

    /// Keeps row `beams[i]` as row `i` (rows may repeat or disappear).
    pub fn reorder(&self, beams: Tensor<1, Int>) -> Self {
        let pick = |t: &Tensor<4>| t.clone().select(0, beams.clone());
        DecoderCache {
            self_kv: self.self_kv.iter().map(|kv| kv.as_ref().map(|(k, v)| (pick(k), pick(v)))).collect(),
            cross_kv: self.cross_kv.iter().map(|(k, v)| (pick(k), pick(v))).collect(),
            cross_mask: self.cross_mask.clone().select(0, beams),
            length: self.length,
        }
    }
}

/// A batch of source sequences, `[batch, length]`; `mask` is 1 for tokens, 0 for padding.
#[derive(Debug, Clone)]
pub struct Source {
    pub ids: Tensor<2, Int>,
    pub mask: Tensor<2, Int>,
}

/// The encoder's output with the source padding it must hide from the decoder.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub states: Tensor<3>,
    pub mask: Tensor<2, Int>,
}

impl Encoded {
    /// One source's encoding (batch 1) as `rows` identical rows, for decoding many keys of it.
    pub fn repeat(&self, rows: usize) -> Encoded {
        let [_, source_len, d] = self.states.dims();
        Encoded {
            states: self.states.clone().expand([rows, source_len, d]),
            mask: self.mask.clone().expand([rows, source_len]),
        }
    }
}

fn key_padding(mask: &Tensor<2, Int>, queries: usize) -> Tensor<3, Bool> {
    let [batch, keys] = mask.dims();
    mask.clone().equal_elem(0).reshape([batch, 1, keys]).expand([batch, queries, keys])
}

fn positions(batch: usize, length: usize, device: &Device) -> Tensor<2, Int> {
    let start = POSITION_OFFSET as i64;
    Tensor::<1, Int>::arange(start..start + length as i64, device).reshape([1, length]).expand([batch, length])
}

impl Seq2Seq {
    /// Loads a HF BART directory (`config.json`, `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, Seq2SeqConfig, LoadReport)> {
        let config = Seq2SeqConfig::from_file(&dir.join("config.json"))?;
        let mut model = config.init(device);
        let report = load_safetensors(&mut model, &dir.join("model.safetensors"), &[(r"^model\.", "")])?;
        Ok((model, config, report))
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` with HF BART names, loadable by
    /// [`Seq2Seq::load`] and by `BartForConditionalGeneration.from_pretrained`.
    pub fn save(&self, dir: &Path, config: &Seq2SeqConfig) -> Result<()> {
        let mut json = serde_json::to_value(config)
            .map_err(|e| ModelError::Config { path: dir.join("config.json"), message: e.to_string() })?;
        json["architectures"] = serde_json::json!(["BartForConditionalGeneration"]);
        json["tie_word_embeddings"] = true.into();
        save_model_dir(self, dir, &json, &[(r"^(shared|encoder|decoder)\.", "model.$1.")])
    }

    /// Token embeddings (scaled) plus learned positions (`positions` already offset), normed.
    fn embed(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>, table: &Embedding, norm: &LayerNorm) -> Tensor<3> {
        let tokens = self.shared.forward(ids) * self.embed_scale;
        norm.forward(tokens + table.forward(positions))
    }

    fn logits(&self, states: Tensor<3>) -> Tensor<3> {
        let [batch, length, d] = states.dims();
        let vocab = self.final_logits_bias.dims()[1];
        let head = self.shared.weight.val().transpose(); // [d, vocab]
        let logits = states.reshape([batch * length, d]).matmul(head) + self.final_logits_bias.val();
        logits.reshape([batch, length, vocab])
    }
}

impl EncoderDecoder for Seq2Seq {
    fn encode(&self, source: &Source) -> Encoded {
        let e = &self.encoder;
        let [batch, length] = source.ids.dims();
        let positions = positions(batch, length, &source.ids.device());
        let mut x = self.embed(source.ids.clone(), positions, &e.embed_positions, &e.layernorm_embedding);
        let mask = key_padding(&source.mask, source.mask.dims()[1]);
        for layer in &e.layers {
            let attended = layer.self_attn.forward(x.clone(), x.clone(), mask.clone());
            x = layer.self_attn_layer_norm.forward(x + attended);
            let hidden = layer.fc2.forward(gelu(layer.fc1.forward(x.clone())));
            x = layer.final_layer_norm.forward(x + hidden);
        }
        Encoded { states: x, mask: source.mask.clone() }
    }

    fn decode_tree(
        &self,
        encoded: &Encoded,
        decoder_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        hidden: Tensor<3, Bool>,
    ) -> Tensor<3> {
        let length = decoder_ids.dims()[1];
        let d = &self.decoder;
        let positions = positions.add_scalar(POSITION_OFFSET as i64);
        let mut x = self.embed(decoder_ids, positions, &d.embed_positions, &d.layernorm_embedding);
        let cross = key_padding(&encoded.mask, length);
        for layer in &d.layers {
            let attended = layer.self_attn.forward(x.clone(), x.clone(), hidden.clone());
            x = layer.self_attn_layer_norm.forward(x + attended);
            let attended = layer.encoder_attn.forward(x.clone(), encoded.states.clone(), cross.clone());
            x = layer.encoder_attn_layer_norm.forward(x + attended);
            let hidden = layer.fc2.forward(gelu(layer.fc1.forward(x.clone())));
            x = layer.final_layer_norm.forward(x + hidden);
        }
        self.logits(x)
    }

    fn decoder_start(&self) -> u32 {
        self.decoder_start
    }

    fn start_decoding(&self, encoded: &Encoded) -> DecoderCache {
        let heads = self.decoder.layers.first().map_or(1, |l| l.encoder_attn.heads);
        let cross_kv = self.decoder.layers.iter().map(|l| l.encoder_attn.keys_values(encoded.states.clone())).collect();
        DecoderCache::new(cross_kv, &encoded.mask, heads)
    }

    fn next_logits(&self, cache: &mut DecoderCache, tokens: Tensor<1, Int>) -> Tensor<2> {
        let [beams] = tokens.dims();
        let device = tokens.device();
        let d = &self.decoder;
        let position = (POSITION_OFFSET + cache.length) as i64;
        let position = Tensor::<1, Int>::arange(position..position + 1, &device).reshape([1, 1]).expand([beams, 1]);
        let tokens = self.shared.forward(tokens.reshape([beams, 1])) * self.embed_scale;
        let mut x = d.layernorm_embedding.forward(tokens + d.embed_positions.forward(position));
        for (i, layer) in d.layers.iter().enumerate() {
            let (k, v) = layer.self_attn.keys_values(x.clone());
            let (k, v) = cache.push_self(i, k, v);
            let attended = layer.self_attn.attend(x.clone(), k, v, None);
            x = layer.self_attn_layer_norm.forward(x + attended);
            let (k, v, mask) = cache.cross(i);
            let attended = layer.encoder_attn.attend(x.clone(), k, v, Some(mask));
            x = layer.encoder_attn_layer_norm.forward(x + attended);
            let hidden = layer.fc2.forward(gelu(layer.fc1.forward(x.clone())));
            x = layer.final_layer_norm.forward(x + hidden);
        }
        cache.length += 1;
        let vocab = self.final_logits_bias.dims()[1];
        self.logits(x).reshape([beams, vocab])
    }
}

/// What training, key scoring and beam search need of an encoder-decoder: the encoder, the
/// teacher-forced decoder, incremental decoding with a cache, and the start token. The student architectures implement it.
pub trait EncoderDecoder {
    fn encode(&self, source: &Source) -> Encoded;

    /// Logits `[batch, length, vocab]` for decoder inputs `[batch, length]` laid out as trees:
    /// `positions [batch, length]` are the position ids (a token's depth; the start token's is
    /// 0) and `hidden [batch, length, length]` is true where a token may not attend to another.
    /// With positions `0..length` and a causal mask this is [`EncoderDecoder::decode`].
    fn decode_tree(
        &self,
        encoded: &Encoded,
        decoder_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        hidden: Tensor<3, Bool>,
    ) -> Tensor<3>;

    /// Logits `[batch, length, vocab]` for decoder inputs `[batch, length]` (teacher forcing).
    fn decode(&self, encoded: &Encoded, decoder_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, length] = decoder_ids.dims();
        let device = decoder_ids.device();
        let positions =
            Tensor::<1, Int>::arange(0..length as i64, &device).reshape([1, length]).expand([batch, length]);
        let causal = Tensor::<2, Bool>::tril_mask([length, length], 0, &device)
            .reshape([1, length, length])
            .expand([batch, length, length]);
        self.decode_tree(encoded, decoder_ids, positions, causal)
    }
    fn decoder_start(&self) -> u32;

    /// A cache for decoding one beam per row of `encoded` (expand `encoded` first for several
    /// beams per source).
    fn start_decoding(&self, encoded: &Encoded) -> DecoderCache;

    /// Feeds one token per beam (`[beams]`) and returns the logits of the next token,
    /// `[beams, vocab]`; equal to [`EncoderDecoder::decode`]'s logits at the same position.
    fn next_logits(&self, cache: &mut DecoderCache, tokens: Tensor<1, Int>) -> Tensor<2>;

    /// Decoder inputs for `labels`: the start token, then the labels shifted right (positions
    /// without a target read as padding), as HF `shift_tokens_right`.
    fn shift_right(&self, labels: &[Vec<i64>], pad: u32, device: &Device) -> Tensor<2, Int> {
        let length = labels.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(labels.len() * length);
        for row in labels {
            ids.push(i64::from(self.decoder_start()));
            for i in 0..length - 1 {
                let label = row.get(i).copied().unwrap_or(IGNORE_LABEL);
                ids.push(if label == IGNORE_LABEL { i64::from(pad) } else { label });
            }
        }
        Tensor::from_data(TensorData::new(ids, [labels.len(), length]), device)
    }

    /// Mean token cross-entropy of `labels` given `source` (labels equal to [`IGNORE_LABEL`]
    /// are skipped), with label smoothing `smoothing` as in PyTorch's `cross_entropy`.
    fn generation_loss(&self, source: &Source, labels: &[Vec<i64>], pad: u32, smoothing: f64) -> GenerationLoss {
        let device = source.ids.device();
        let decoder_ids = self.shift_right(labels, pad, &device);
        let logits = self.decode(&self.encode(source), decoder_ids);
        token_cross_entropy(logits, labels, smoothing)
    }

    /// Teacher-forced score of each key for one query: the sum of the log-probabilities of the
    /// key's tokens after the start token. All keys share one encoder pass; `[keys]`.
    fn score_keys(&self, encoded: &Encoded, keys: &[Vec<u32>]) -> Tensor<1> {
        let count = keys.len();
        self.key_token_log_probs(encoded, keys).sum_dim(1).reshape([count])
    }

    /// Log-probability of each token of each key, teacher-forced, one row per key (`[keys,
    /// longest]`, 0 past a key's end).
    fn key_token_log_probs(&self, encoded: &Encoded, keys: &[Vec<u32>]) -> Tensor<2> {
        let device = encoded.states.device();
        let count = keys.len();
        let length = keys.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let labels: Vec<Vec<i64>> = keys.iter().map(|k| k.iter().map(|&t| i64::from(t)).collect()).collect();
        let decoder_ids = self.shift_right(&labels, 0, &device);
        let log_probs = log_softmax(self.decode(&encoded.repeat(count), decoder_ids), 2);
        let (targets, valid) = targets(&labels, length, &device);
        log_probs.gather(2, targets.reshape([count, length, 1])).reshape([count, length]) * valid
    }

    /// The same scores as [`EncoderDecoder::score_keys`], decoding less: the keys are laid out
    /// as a token tree ([`KeyTrie`]), so a prefix shared by several keys (every beam prefix is
    /// a key, beams share their first tokens, keys repeat across passages) is decoded once.
    /// `[keys]`.
    fn score_keys_packed(&self, encoded: &Encoded, keys: &[Vec<u32>]) -> Tensor<1> {
        let device = encoded.states.device();
        let trie = KeyTrie::new(keys, self.decoder_start());
        let (rows, length) = (trie.tokens.len(), trie.length());
        let padded = |values: &[Vec<i64>], fill: i64| -> Tensor<2, Int> {
            let flat: Vec<i64> =
                values.iter().flat_map(|row| row.iter().copied().chain(std::iter::repeat(fill)).take(length)).collect();
            Tensor::from_data(TensorData::new(flat, [rows, length]), &device)
        };
        let start = i64::from(self.decoder_start());
        let tokens: Vec<Vec<i64>> = trie.tokens.iter().map(|r| r.iter().map(|&t| i64::from(t)).collect()).collect();
        let depths: Vec<Vec<i64>> = trie.depths.iter().map(|r| r.iter().map(|&d| d as i64).collect()).collect();
        let hidden = Tensor::<3, Bool>::from_data(TensorData::new(trie.hidden(), [rows, length, length]), &device);
        let logits = self.decode_tree(&encoded.repeat(rows), padded(&tokens, start), padded(&depths, 0), hidden);
        let vocab = logits.dims()[2];
        let log_probs = log_softmax(logits, 2).reshape([rows * length * vocab]);
        let picks: Vec<i64> = trie
            .picks
            .iter()
            .map(|&(row, position, token)| ((row * length + position) * vocab + token as usize) as i64)
            .collect();
        let count = picks.len().max(1);
        let token_log_probs = if picks.is_empty() {
            Tensor::<1>::zeros([1], &device)
        } else {
            log_probs.select(0, Tensor::<1, Int>::from_data(TensorData::new(picks, [count]), &device))
        };
        // Each key sums its tokens' log-probabilities: a 0/1 matrix [keys, tokens] times them.
        let mut select = vec![0f32; keys.len() * count];
        for (k, path) in trie.paths.iter().enumerate() {
            for &pick in path {
                select[k * count + pick] = 1.0;
            }
        }
        let select = Tensor::<2>::from_data(TensorData::new(select, [keys.len(), count]), &device);
        select.matmul(token_log_probs.reshape([count, 1])).reshape([keys.len()])
    }
}

/// Target ids (ignored positions read as 0) and a 0/1 float mask of the real targets.
fn targets(labels: &[Vec<i64>], length: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let mut ids = Vec::with_capacity(labels.len() * length);
    let mut valid = Vec::with_capacity(labels.len() * length);
    for row in labels {
        for i in 0..length {
            let label = row.get(i).copied().unwrap_or(IGNORE_LABEL);
            ids.push(if label == IGNORE_LABEL { 0 } else { label });
            valid.push(if label == IGNORE_LABEL { 0.0f32 } else { 1.0 });
        }
    }
    let shape = [labels.len(), length];
    (Tensor::from_data(TensorData::new(ids, shape), device), Tensor::from_data(TensorData::new(valid, shape), device))
}

/// The training loss of a batch and two detached measures of how well the targets are known.
#[derive(Debug, Clone)]
pub struct GenerationLoss {
    /// Mean over real targets of `(1 - s) * NLL + s * mean_v(-log p_v)`; what training minimises.
    pub loss: Tensor<1>,
    /// Mean token negative log-likelihood, without smoothing (detached).
    pub nll: Tensor<1>,
    /// Fraction of real targets that are the arg-max of their logits (detached): 1.0 means the
    /// batch's targets are reproduced exactly by greedy teacher-forced decoding.
    pub accuracy: Tensor<1>,
}

/// Label-smoothed token cross-entropy as PyTorch's `cross_entropy(label_smoothing = s)`, plus
/// the unsmoothed NLL and the arg-max accuracy of the same targets.
pub fn token_cross_entropy(logits: Tensor<3>, labels: &[Vec<i64>], smoothing: f64) -> GenerationLoss {
    let [batch, length, vocab] = logits.dims();
    let device = logits.device();
    let log_probs = log_softmax(logits, 2);
    let (targets, valid) = targets(labels, length, &device);
    let predicted = log_probs.clone().detach().argmax(2).reshape([batch, length]);
    let nll = -log_probs.clone().gather(2, targets.clone().reshape([batch, length, 1])).reshape([batch, length]);
    let uniform = -log_probs.sum_dim(2).reshape([batch, length]) / vocab as f64;
    let per_token = nll.clone() * (1.0 - smoothing) + uniform * smoothing;
    let count = valid.clone().sum().clamp_min(1.0);
    let correct = predicted.equal(targets).float() * valid.clone();
    GenerationLoss {
        loss: (per_token * valid.clone()).sum() / count.clone(),
        nll: (nll.detach() * valid).sum() / count.clone().detach(),
        accuracy: correct.sum() / count.detach(),
    }
}
