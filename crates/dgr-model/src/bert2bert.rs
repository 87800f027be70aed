//! The BERT2BERT student: a BERT encoder and a BERT decoder with cross-attention and an LM head
//! tied to the decoder's word embeddings, shaped like HF `EncoderDecoderModel(BertModel,
//! BertLMHeadModel)`. It can warm-start from one pretrained BERT (e.g. MiniLM from the assets):
//! both stacks take its weights, cross-attention and the LM head transform start fresh.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::Deserialize;

use crate::bert::{
    AddNorm, BertAttention, BertConfig, BertEmbeddings, BertModel, EncoderInput, Intermediate, padding_mask,
};
use crate::error::{ModelError, Result};
use crate::seq2seq::{DecoderCache, Encoded, EncoderDecoder, Source};
use crate::weights::{LoadReport, load_safetensors, load_safetensors_partial, save_model_dir};

/// HF `EncoderDecoderModel` `config.json`: the two BERT configs and the special tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Bert2BertConfig {
    pub encoder: BertConfig,
    pub decoder: BertConfig,
    pub decoder_start_token_id: u32,
    pub pad_token_id: u32,
}

#[derive(Module, Debug)]
pub struct Bert2Bert {
    pub encoder: BertModel,
    pub decoder: BertLmDecoder,
    pub decoder_start: u32,
}

#[derive(Module, Debug)]
pub struct BertLmDecoder {
    pub bert: BertDecoderModel,
    pub cls: LmHead,
}

#[derive(Module, Debug)]
pub struct BertDecoderModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertDecoderStack,
}

#[derive(Module, Debug)]
pub struct BertDecoderStack {
    pub layer: Vec<BertDecoderLayer>,
}

#[derive(Module, Debug)]
pub struct BertDecoderLayer {
    pub attention: BertAttention,
    pub crossattention: BertAttention,
    pub intermediate: Intermediate,
    pub output: AddNorm,
}

#[derive(Module, Debug)]
pub struct LmHead {
    pub predictions: Predictions,
}

/// `LayerNorm(gelu(dense(x)))`, then the tied word embeddings and a bias.
#[derive(Module, Debug)]
pub struct Predictions {
    pub transform: Transform,
    pub bias: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
pub struct Transform {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

impl Bert2BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Bert2BertConfig = crate::error::read_json_config(path, "encoder-decoder BERT")?;
        for part in [&config.encoder, &config.decoder] {
            part.validate().map_err(|message| ModelError::Config { path: path.to_path_buf(), message })?;
        }
        Ok(config)
    }

    /// A model with fresh weights.
    pub fn init(&self, device: &Device) -> Bert2Bert {
        let d = &self.decoder;
        let h = d.hidden_size;
        Bert2Bert {
            encoder: self.encoder.init(device),
            decoder: BertLmDecoder {
                bert: BertDecoderModel {
                    embeddings: d.init_embeddings(device),
                    encoder: BertDecoderStack {
                        layer: (0..d.num_hidden_layers)
                            .map(|_| BertDecoderLayer {
                                attention: d.init_attention(device),
                                crossattention: d.init_attention(device),
                                intermediate: d.init_intermediate(device),
                                output: d.init_add_norm(d.intermediate_size, device),
                            })
                            .collect(),
                    },
                },
                cls: LmHead {
                    predictions: Predictions {
                        transform: Transform { dense: d.init_linear(h, h, device), layer_norm: d.init_norm(device) },
                        bias: Param::from_tensor(Tensor::zeros([d.vocab_size], device)),
                    },
                },
            },
            decoder_start: self.decoder_start_token_id,
        }
    }
}

impl Bert2Bert {
    /// The device the student's parameters live on.
    pub fn device(&self) -> Device {
        self.encoder.embeddings.word_embeddings.weight.val().device()
    }

    /// Loads a HF `EncoderDecoderModel` directory (`config.json`, `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, Bert2BertConfig, LoadReport)> {
        let config = Bert2BertConfig::from_file(&dir.join("config.json"))?;
        let mut model = config.init(device);
        let report = load_safetensors(&mut model, &dir.join("model.safetensors"), &[])?;
        Ok((model, config, report))
    }

    /// Warm start from one HF BERT directory: encoder and decoder stacks take its weights;
    /// cross-attention, the LM head transform and its bias start fresh.
    pub fn warm_start(
        bert_dir: &Path,
        decoder_start: u32,
        pad: u32,
        device: &Device,
    ) -> Result<(Self, Bert2BertConfig)> {
        let bert = BertConfig::from_file(&bert_dir.join("config.json"))?;
        let config = Bert2BertConfig {
            encoder: bert.clone(),
            decoder: bert,
            decoder_start_token_id: decoder_start,
            pad_token_id: pad,
        };
        let mut model = config.init(device);
        let weights = bert_dir.join("model.safetensors");
        let fresh = [r"\.crossattention\.", r"^decoder\.cls\."];
        load_safetensors_partial(&mut model, &weights, &[(r"^bert\.", ""), (r"^", "encoder.")], r"^encoder\.", &fresh)?;
        load_safetensors_partial(
            &mut model,
            &weights,
            &[(r"^bert\.", ""), (r"^", "decoder.bert.")],
            r"^decoder\.",
            &fresh,
        )?;
        Ok((model, config))
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` under HF names, loadable by
    /// [`Bert2Bert::load`] and by `EncoderDecoderModel.from_pretrained`.
    pub fn save(&self, dir: &Path, config: &Bert2BertConfig) -> Result<()> {
        let part = |c: &BertConfig| {
            serde_json::to_value(c)
                .map_err(|e| ModelError::Config { path: dir.join("config.json"), message: e.to_string() })
        };
        let mut decoder = part(&config.decoder)?;
        decoder["is_decoder"] = true.into();
        decoder["add_cross_attention"] = true.into();
        let json = serde_json::json!({
            "model_type": "encoder-decoder",
            "architectures": ["EncoderDecoderModel"],
            "is_encoder_decoder": true,
            "encoder": part(&config.encoder)?,
            "decoder": decoder,
            "decoder_start_token_id": config.decoder_start_token_id,
            "pad_token_id": config.pad_token_id,
        });
        save_model_dir(self, dir, &json, &[(r"\.self_attn\.", ".self."), (r"\.layer_norm\.", ".LayerNorm.")])
    }

    fn decoder_layers(&self, x: Tensor<3>, encoded: &Encoded, hidden: Tensor<4, Bool>) -> Tensor<3> {
        let [_, length, _] = x.dims();
        let heads = self.decoder.bert.encoder.layer.first().map_or(1, |l| l.crossattention.self_attn.heads);
        let cross = padding_mask(&encoded.mask, heads, length);
        let mut x = x;
        for layer in &self.decoder.bert.encoder.layer {
            x = layer.attention.forward(x.clone(), x, hidden.clone());
            x = layer.crossattention.forward(x, encoded.states.clone(), cross.clone());
            x = layer.output.forward(layer.intermediate.forward(x.clone()), x);
        }
        x
    }

    fn logits(&self, states: Tensor<3>) -> Tensor<3> {
        let p = &self.decoder.cls.predictions;
        let x = p.transform.layer_norm.forward(gelu(p.transform.dense.forward(states)));
        let [batch, length, d] = x.dims();
        let words = self.decoder.bert.embeddings.word_embeddings.weight.val(); // [vocab, d]
        let vocab = words.dims()[0];
        let logits = x.reshape([batch * length, d]).matmul(words.transpose()) + p.bias.val().reshape([1, vocab]);
        logits.reshape([batch, length, vocab])
    }
}

impl EncoderDecoder for Bert2Bert {
    fn encode(&self, source: &Source) -> Encoded {
        let input = EncoderInput {
            input_ids: source.ids.clone(),
            token_type_ids: source.ids.zeros_like(),
            attention_mask: source.mask.clone(),
        };
        Encoded { states: self.encoder.forward(&input), mask: source.mask.clone() }
    }

    fn decode_tree(
        &self,
        encoded: &Encoded,
        decoder_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        hidden: Tensor<3, Bool>,
    ) -> Tensor<3> {
        let [batch, length] = decoder_ids.dims();
        let heads = self.decoder.bert.encoder.layer.first().map_or(1, |l| l.attention.self_attn.heads);
        let hidden = hidden.reshape([batch, 1, length, length]).expand([batch, heads, length, length]);
        let embeddings = &self.decoder.bert.embeddings;
        let x = embeddings.forward_positions(decoder_ids.clone(), decoder_ids.zeros_like(), positions);
        self.logits(self.decoder_layers(x, encoded, hidden))
    }

    fn decoder_start(&self) -> u32 {
        self.decoder_start
    }

    fn start_decoding(&self, encoded: &Encoded) -> DecoderCache {
        let layers = &self.decoder.bert.encoder.layer;
        let heads = layers.first().map_or(1, |l| l.crossattention.self_attn.heads);
        let cross_kv = layers.iter().map(|l| l.crossattention.self_attn.keys_values(encoded.states.clone())).collect();
        DecoderCache::new(cross_kv, &encoded.mask, heads)
    }

    fn next_logits(&self, cache: &mut DecoderCache, tokens: Tensor<1, Int>) -> Tensor<2> {
        let [beams] = tokens.dims();
        let ids = tokens.reshape([beams, 1]);
        let mut x = self.decoder.bert.embeddings.forward_at(ids.clone(), ids.zeros_like(), cache.length);
        for (i, layer) in self.decoder.bert.encoder.layer.iter().enumerate() {
            let attention = &layer.attention;
            let (k, v) = attention.self_attn.keys_values(x.clone());
            let (k, v) = cache.push_self(i, k, v);
            x = attention.output.forward(attention.self_attn.attend(x.clone(), k, v, None), x);
            let cross = &layer.crossattention;
            let (k, v, mask) = cache.cross(i);
            x = cross.output.forward(cross.self_attn.attend(x.clone(), k, v, Some(mask)), x);
            x = layer.output.forward(layer.intermediate.forward(x.clone()), x);
        }
        cache.length += 1;
        let vocab = self.decoder.bert.embeddings.word_embeddings.weight.dims()[0];
        self.logits(x).reshape([beams, vocab])
    }
}
