//! Teachers on a BERT-family encoder: the bi-encoder (mean pooling + L2 norm, cosine score) and
//! the cross-encoder (`[CLS] q [SEP] passage [SEP]`, score = first logit of a head on `[CLS]`:
//! BERT's tanh pooler + linear, or ELECTRA's dense + GELU + linear).

use std::path::Path;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::bert::{BertConfig, BertModel, EncoderInput};
use crate::error::Result;
use crate::weights::{LoadReport, load_safetensors};

/// A sentence embedder: mean of the token states over the attention mask, L2-normalised.
#[derive(Module, Debug)]
pub struct BiEncoder {
    pub bert: BertModel,
}

/// A pair scorer: HF `BertForSequenceClassification` or `ElectraForSequenceClassification`.
/// Both heads are `classifier(activation(pooler([CLS])))`; BERT's activation is tanh, ELECTRA's
/// GELU (its `classifier.dense` / `classifier.out_proj` load as `pooler` / `classifier`).
#[derive(Module, Debug)]
pub struct CrossEncoder {
    pub bert: BertModel,
    pub pooler: Linear,
    pub classifier: Linear,
    /// ELECTRA's head: GELU instead of tanh after `pooler`.
    pub gelu_head: bool,
}

/// Our names for HF BERT / ELECTRA encoder tensors, with or without the model prefix.
const ENCODER_PREFIXES: [(&str, &str); 2] = [(r"^(bert|electra)\.", ""), (r"^", "bert.")];

/// `config.json` and `model.safetensors` of a HF model directory.
fn model_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("config.json"), dir.join("model.safetensors"))
}

impl BiEncoder {
    /// Loads a HF BERT or ELECTRA discriminator (encoder keys with or without the `bert.` /
    /// `electra.` prefix; poolers and pre-training heads are reported unused).
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, BertConfig, LoadReport)> {
        let (config_path, weights) = model_files(dir);
        let config = BertConfig::from_file(&config_path)?;
        let mut model = BiEncoder { bert: config.init(device) };
        let report = load_safetensors(&mut model, &weights, &ENCODER_PREFIXES)?;
        Ok((model, config, report))
    }

    /// Unit-length embeddings, `[batch, hidden]`.
    pub fn embed(&self, input: &EncoderInput) -> Tensor<2> {
        let states = self.bert.forward(input);
        let [batch, length, hidden] = states.dims();
        let mask = input.attention_mask.clone().float().reshape([batch, length, 1]);
        let summed = (states * mask.clone()).sum_dim(1).reshape([batch, hidden]);
        let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
        let mean = summed / counts;
        let norm = (mean.clone() * mean.clone()).sum_dim(1).sqrt().clamp_min(1e-12);
        mean / norm
    }
}

impl CrossEncoder {
    /// Loads a HF `BertForSequenceClassification` or `ElectraForSequenceClassification` with
    /// `num_labels` >= 1 (the first logit is the score).
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, BertConfig, LoadReport)> {
        let (config_path, weights) = model_files(dir);
        let config = BertConfig::from_file(&config_path)?;
        let labels = num_labels(&config_path)?;
        let h = config.hidden_size;
        let electra = config.model_type == "electra";
        let mut model = CrossEncoder {
            bert: config.init(device),
            pooler: LinearConfig::new(h, h).init(device),
            classifier: LinearConfig::new(h, labels).init(device),
            gelu_head: electra,
        };
        let remaps: &[(&str, &str)] = if electra {
            &[
                (r"^classifier\.dense\.", "pooler."),
                (r"^classifier\.out_proj\.", "classifier."),
                (r"^electra\.", "bert."),
            ]
        } else {
            &[(r"^bert\.pooler\.dense\.", "pooler."), (r"^(embeddings|encoder)\.", "bert.$1.")]
        };
        let report = load_safetensors(&mut model, &weights, remaps)?;
        Ok((model, config, report))
    }

    /// One score per pair, `[batch]`.
    pub fn score(&self, input: &EncoderInput) -> Tensor<1> {
        let states = self.bert.forward(input);
        let [batch, _, hidden] = states.dims();
        let cls = states.slice([0..batch, 0..1, 0..hidden]).reshape([batch, hidden]);
        let pooled = self.pooler.forward(cls);
        let pooled = if self.gelu_head { gelu(pooled) } else { pooled.tanh() };
        let logits = self.classifier.forward(pooled);
        logits.slice([0..batch, 0..1]).reshape([batch])
    }
}

/// `num_labels` of a classification config: the length of `id2label`, else 2 (HF's default).
fn num_labels(config_path: &Path) -> Result<usize> {
    let value: serde_json::Value = crate::error::read_json_config(config_path, "classification")?;
    Ok(value["id2label"].as_object().map_or(2, |labels| labels.len().max(1)))
}
