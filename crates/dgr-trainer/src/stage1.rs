//! Stage 1: the student learns to generate identifiers (method §1) with the token-level
//! generation loss, on the [`crate::engine`].

use std::collections::BTreeMap;

use dgr_model::seq2seq::{EncoderDecoder, Source};
use dgr_model::student::Student;
use dgr_model::tokenizer::{Encoded, TextTokenizer, batch};
use tracing::warn;

use crate::engine::{EngineConfig, Example, Loss, Objective, TrainError};
use crate::pairs::{PairConfig, TrainingPair};

/// Stage 1 (`dgr train-gen`, `[train_gen]`): the student (a BERT2BERT warm-started from a
/// pretrained BERT, or a pretrained BART) trained on multiview identifier pairs of the train split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainGenConfig {
    /// HF BERT directory (config.json, model.safetensors) both stacks of a BERT2BERT warm-start
    /// from, a HF BART directory (e.g. facebook/bart-large), or a student saved by an earlier
    /// run, which training continues.
    pub init: std::path::PathBuf,
    /// `tokenizer.json` of that model.
    pub tokenizer: std::path::PathBuf,
    pub label_smoothing: f64,
    pub max_source_tokens: usize,
    pub max_target_tokens: usize,
    /// Sources or targets longer than their limit: `truncate` (warn and cut) or `error`.
    pub overlong: dgr_model::tokenizer::Overlong,
    pub engine: EngineConfig,
    pub pairs: PairConfig,
}

/// Token ids of a pair, ready to batch: the source with special tokens; the labels are the
/// target tokens after the start token, ending with the separator that ends a sequence.
struct Tokenized {
    source: Encoded,
    labels: Vec<i64>,
}

/// The generation loss over stage-1 pairs (label-smoothed token cross-entropy), logging the
/// unsmoothed NLL and the teacher-forced token accuracy.
pub struct GenerationObjective {
    data: Vec<Tokenized>,
    pad: u32,
    label_smoothing: f64,
}

impl GenerationObjective {
    /// Tokenises `pairs`; sources and targets over the tokenizers' limits are cut (counted in
    /// a warning) or refused, as the tokenizers are set.
    pub fn new(
        pairs: &[TrainingPair],
        source_tokenizer: &TextTokenizer,
        target_tokenizer: &TextTokenizer,
        pad: u32,
        label_smoothing: f64,
    ) -> Result<Self, TrainError> {
        let (mut cut_sources, mut cut_targets) = (0usize, 0usize);
        let data = pairs
            .iter()
            .map(|pair| {
                let source = source_tokenizer.encode(&pair.source)?;
                let target = target_tokenizer.encode(&pair.target)?;
                cut_sources += usize::from(source.truncated);
                cut_targets += usize::from(target.truncated);
                let labels = target.ids.iter().skip(1).map(|&t| i64::from(t)).collect();
                Ok(Tokenized { source, labels })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        if cut_sources + cut_targets > 0 {
            warn!(
                sources = cut_sources,
                source_limit = source_tokenizer.max_length(),
                targets = cut_targets,
                target_limit = target_tokenizer.max_length(),
                "training pairs truncated to the token limits"
            );
        }
        Ok(GenerationObjective { data, pad, label_smoothing })
    }
}

impl Objective for GenerationObjective {
    fn examples(&self) -> usize {
        self.data.len()
    }

    fn loss(&mut self, model: &Student, examples: &mut [Example]) -> Result<Loss, TrainError> {
        let device = model.device();
        let sources: Vec<Encoded> = examples.iter().map(|e| self.data[e.index].source.clone()).collect();
        let labels: Vec<Vec<i64>> = examples.iter().map(|e| self.data[e.index].labels.clone()).collect();
        // The loss is the mean over label tokens.
        let weight = labels.iter().map(Vec::len).sum::<usize>() as f64;
        let input = batch(&sources, &device);
        let source = Source { ids: input.input_ids, mask: input.attention_mask };
        let loss = model.generation_loss(&source, &labels, self.pad, self.label_smoothing);
        let measures = BTreeMap::from([
            ("nll", f64::from(loss.nll.into_scalar::<f32>())),
            ("accuracy", f64::from(loss.accuracy.into_scalar::<f32>())),
        ]);
        Ok(Loss { loss: loss.loss, weight, measures })
    }
}
