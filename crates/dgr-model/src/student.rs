//! The student both training stages train and retrieval decodes with: a BERT2BERT (warm-started
//! from a pretrained BERT, the CPU default) or a BART (a pretrained BART directory, e.g.
//! `facebook/bart-large`, the paper's student). A model directory says which it holds by its
//! `config.json`'s `model_type`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::bert2bert::{Bert2Bert, Bert2BertConfig};
use crate::error::{ModelError, Result};
use crate::seq2seq::{DecoderCache, Encoded, EncoderDecoder, Seq2Seq, Seq2SeqConfig, Source};
use crate::tokenizer::TextTokenizer;

/// BERT's padding token, which pads a warm-started BERT2BERT's decoder inputs.
const BERT_PAD: &str = "[PAD]";

// A process holds one student and moves it rarely: the sizes of the variants do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Student {
    Bert2Bert(Bert2Bert),
    Bart(Seq2Seq),
}

/// The configuration a [`Student`] is saved with.
#[derive(Debug, Clone, PartialEq)]
pub enum StudentConfig {
    Bert2Bert(Bert2BertConfig),
    Bart(Seq2SeqConfig),
}

impl StudentConfig {
    /// The padding token of the decoder's inputs.
    pub fn pad_token_id(&self) -> u32 {
        match self {
            StudentConfig::Bert2Bert(c) => c.pad_token_id,
            StudentConfig::Bart(c) => c.pad_token_id,
        }
    }

    /// The longest source or target the position tables hold.
    pub fn max_positions(&self) -> usize {
        match self {
            StudentConfig::Bert2Bert(c) => c.encoder.max_position_embeddings.min(c.decoder.max_position_embeddings),
            StudentConfig::Bart(c) => c.max_position_embeddings,
        }
    }

    /// Which architecture, as logs and errors name it.
    pub fn name(&self) -> &'static str {
        match self {
            StudentConfig::Bert2Bert(_) => "BERT2BERT",
            StudentConfig::Bart(_) => "BART",
        }
    }
}

/// What a model directory holds, by its `config.json`'s `model_type`.
enum Kind {
    /// A saved BERT2BERT (HF `EncoderDecoderModel`).
    Bert2Bert,
    Bart,
    /// A plain BERT (or ELECTRA) encoder, which a BERT2BERT warm-starts from.
    Bert,
}

fn kind(dir: &Path) -> Result<Kind> {
    let config: serde_json::Value = crate::error::read_json_config(&dir.join("config.json"), "model")?;
    Ok(match config["model_type"].as_str() {
        Some("encoder-decoder") => Kind::Bert2Bert,
        Some("bart") => Kind::Bart,
        _ => Kind::Bert,
    })
}

impl Student {
    /// Loads a saved student: a BERT2BERT or a BART directory.
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, StudentConfig)> {
        match kind(dir)? {
            Kind::Bart => {
                let (model, config, _) = Seq2Seq::load(dir, device)?;
                Ok((Student::Bart(model), StudentConfig::Bart(config)))
            }
            Kind::Bert2Bert | Kind::Bert => {
                let (model, config, _) = Bert2Bert::load(dir, device)?;
                Ok((Student::Bert2Bert(model), StudentConfig::Bert2Bert(config)))
            }
        }
    }

    /// The student to train from `dir`: a saved BERT2BERT or a BART continues as it is; a BERT
    /// directory warm-starts a BERT2BERT ([`Bert2Bert::warm_start`]) whose decoder starts with
    /// the mark `tokenizer` opens a sequence with (`[CLS]`) and pads with `[PAD]`, as HF's
    /// BERT2BERT recipes do.
    pub fn load_or_warm_start(dir: &Path, tokenizer: &TextTokenizer, device: &Device) -> Result<(Self, StudentConfig)> {
        match kind(dir)? {
            Kind::Bert => {
                tracing::info!(dir = %dir.display(), "warm-starting a BERT2BERT student from BERT");
                let (start, _) = tokenizer.sequence_marks()?;
                let pad = tokenizer.token_id(BERT_PAD).ok_or_else(|| ModelError::Encode {
                    text: BERT_PAD.into(),
                    message: "the tokenizer has no padding token for a BERT2BERT decoder".into(),
                })?;
                let (model, config) = Bert2Bert::warm_start(dir, start, pad, device)?;
                Ok((Student::Bert2Bert(model), StudentConfig::Bert2Bert(config)))
            }
            Kind::Bert2Bert | Kind::Bart => {
                let (model, config) = Self::load(dir, device)?;
                tracing::info!(dir = %dir.display(), "continuing a saved {} student", config.name());
                Ok((model, config))
            }
        }
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` under HF names.
    pub fn save(&self, dir: &Path, config: &StudentConfig) -> Result<()> {
        match (self, config) {
            (Student::Bert2Bert(model), StudentConfig::Bert2Bert(config)) => model.save(dir, config),
            (Student::Bart(model), StudentConfig::Bart(config)) => model.save(dir, config),
            _ => Err(ModelError::Config {
                path: dir.join("config.json"),
                message: "the configuration is of another architecture than the model".into(),
            }),
        }
    }

    /// The device the student's parameters live on.
    pub fn device(&self) -> Device {
        match self {
            Student::Bert2Bert(model) => model.device(),
            Student::Bart(model) => model.shared.weight.val().device(),
        }
    }
}

impl EncoderDecoder for Student {
    fn encode(&self, source: &Source) -> Encoded {
        match self {
            Student::Bert2Bert(model) => model.encode(source),
            Student::Bart(model) => model.encode(source),
        }
    }

    fn decode_tree(
        &self,
        encoded: &Encoded,
        decoder_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        hidden: Tensor<3, Bool>,
    ) -> Tensor<3> {
        match self {
            Student::Bert2Bert(model) => model.decode_tree(encoded, decoder_ids, positions, hidden),
            Student::Bart(model) => model.decode_tree(encoded, decoder_ids, positions, hidden),
        }
    }

    fn decoder_start(&self) -> u32 {
        match self {
            Student::Bert2Bert(model) => model.decoder_start(),
            Student::Bart(model) => model.decoder_start(),
        }
    }

    fn start_decoding(&self, encoded: &Encoded) -> DecoderCache {
        match self {
            Student::Bert2Bert(model) => model.start_decoding(encoded),
            Student::Bart(model) => model.start_decoding(encoded),
        }
    }

    fn next_logits(&self, cache: &mut DecoderCache, tokens: Tensor<1, Int>) -> Tensor<2> {
        match self {
            Student::Bert2Bert(model) => model.next_logits(cache, tokens),
            Student::Bart(model) => model.next_logits(cache, tokens),
        }
    }
}
