//! Stage 1: the student learns to generate identifiers (method §1) with the token-level
//! generation loss, on the [`crate::engine`].

use std::collections::BTreeMap;

use dgr_model::seq2seq::{EncoderDecoder, Source};
use dgr_model::student::Student;
use dgr_model::tokenizer::{Encoded, TextTokenizer, batch};
use tracing::warn;

use crate::engine::{EngineConfig, Example, Loss, Objective, TrainError};
use crate::pair_space::PairSource;
use crate::pairs::PairConfig;

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

/// The generation loss over stage-1 pairs (label-smoothed token cross-entropy), logging the
/// unsmoothed NLL, the teacher-forced token accuracy and `truncated`, the share of the step's
/// pairs cut to the token limits. Pairs are read and tokenised when a step asks for them; with
/// the tokenizers set to refuse overlong sequences, the step that meets one fails.
pub struct GenerationObjective<P: PairSource> {
    pairs: P,
    source_tokenizer: TextTokenizer,
    target_tokenizer: TextTokenizer,
    pad: u32,
    label_smoothing: f64,
    warned: bool,
}

impl<P: PairSource> GenerationObjective<P> {
    pub fn new(
        pairs: P,
        source_tokenizer: TextTokenizer,
        target_tokenizer: TextTokenizer,
        pad: u32,
        label_smoothing: f64,
    ) -> Self {
        GenerationObjective { pairs, source_tokenizer, target_tokenizer, pad, label_smoothing, warned: false }
    }
}

impl<P: PairSource> Objective for GenerationObjective<P> {
    fn examples(&self) -> usize {
        self.pairs.pairs() as usize
    }

    fn loss(&mut self, model: &Student, examples: &mut [Example]) -> Result<Loss, TrainError> {
        let device = model.device();
        let mut sources: Vec<Encoded> = Vec::with_capacity(examples.len());
        // Labels are the target tokens after the start token, ending with the separator.
        let mut labels: Vec<Vec<i64>> = Vec::with_capacity(examples.len());
        let mut truncated = 0usize;
        for example in examples.iter() {
            let pair = self.pairs.pair(example.index as u64)?;
            let source = self.source_tokenizer.encode(&pair.source)?;
            let target = self.target_tokenizer.encode(&pair.target)?;
            truncated += usize::from(source.truncated || target.truncated);
            labels.push(target.ids.iter().skip(1).map(|&t| i64::from(t)).collect());
            sources.push(source);
        }
        if truncated > 0 && !self.warned {
            self.warned = true;
            warn!(
                source_limit = self.source_tokenizer.max_length(),
                target_limit = self.target_tokenizer.max_length(),
                "training pairs are cut to the token limits (train_log.jsonl: `truncated`, the share per step)"
            );
        }
        // The loss is the mean over label tokens.
        let weight = labels.iter().map(Vec::len).sum::<usize>() as f64;
        let input = batch(&sources, &device);
        let source = Source { ids: input.input_ids, mask: input.attention_mask };
        let loss = model.generation_loss(&source, &labels, self.pad, self.label_smoothing);
        let measures = BTreeMap::from([
            ("nll", f64::from(loss.nll.into_scalar::<f32>())),
            ("accuracy", f64::from(loss.accuracy.into_scalar::<f32>())),
            ("truncated", truncated as f64 / examples.len().max(1) as f64),
        ]);
        Ok(Loss { loss: loss.loss, weight, measures })
    }
}
