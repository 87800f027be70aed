//! Beam search constrained by the corpus index (method §2): at every step a beam may only take a
//! token that continues its text somewhere in the corpus, so every prefix on the beam is an
//! n-gram of the corpus — a *key*. Scores are the student's own log-probabilities (log-softmax
//! over the whole vocabulary), so a key's score is its teacher-forced log P(key | query).

use std::time::{Duration, Instant};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use dgr_index::{CorpusIndex, Prefix};

use crate::error::{Result, host_values};
use crate::seq2seq::{Encoded, EncoderDecoder};

/// How one identifier view is decoded.
#[derive(Debug, Clone)]
pub struct ViewSearch {
    /// Where decoding starts in the index: the root (any position), the start of a passage
    /// (titles), or behind a marker (pseudo-queries after `||`).
    pub start: Prefix,
    /// The index tokens that `start` stands for (e.g. the `||` marker); keys are matched in the
    /// index as `forced` + generated tokens.
    pub forced: Vec<u32>,
    /// Most tokens generated.
    pub max_tokens: usize,
    pub end: End,
    /// Every prefix on the beam is a key (body, pseudo-query), or only finished ones (titles,
    /// which must be complete).
    pub keys: KeepKeys,
}

/// When a beam may stop by generating the end-of-sequence token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Never: beams run to `max_tokens` (body spans).
    Never,
    /// Exactly when the generated tokens end with these tokens (a title or pseudo-query closed
    /// by `@@`): a closed identifier must end there, an open one cannot end.
    AfterTokens(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepKeys {
    EveryPrefix,
    Finished,
}

/// A key found by the search.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundKey {
    /// The generated tokens.
    pub tokens: Vec<u32>,
    /// log P(tokens | source), without the end-of-sequence token.
    pub log_prob: f32,
    /// Occurrences in the corpus of `forced` + `tokens` (anchored as the view's start).
    pub count: u64,
}

/// The keys of one search, best first, and the time spent asking the index.
#[derive(Debug, Clone)]
pub struct Search {
    pub keys: Vec<FoundKey>,
    pub index_time: Duration,
}

#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    prefix: Prefix,
    log_prob: f32,
}

/// Runs a constrained beam search of width `beam` for one source (`encoded` has batch 1) and
/// returns its keys. `eos` is the student's end-of-sequence token.
pub fn search_keys(
    model: &impl EncoderDecoder,
    index: &CorpusIndex,
    encoded: &Encoded,
    view: &ViewSearch,
    beam: usize,
    eos: u32,
) -> Result<Search> {
    let device = encoded.states.device();
    let mut cache = model.start_decoding(encoded);
    let mut live = vec![Hypothesis { tokens: Vec::new(), prefix: view.start.clone(), log_prob: 0.0 }];
    let mut last = vec![model.decoder_start()];
    let mut keys = Vec::new();
    let mut finished: Vec<FoundKey> = Vec::new();
    let mut index_time = Duration::ZERO;
    // One step more than `max_tokens`, where an identifier closed on the last token ends.
    for _ in 0..=view.max_tokens {
        let open = |h: &Hypothesis| h.tokens.len() < view.max_tokens || may_end(h, &view.end);
        if beam == 0 || !live.iter().any(open) {
            break;
        }
        let tokens = Tensor::<1, Int>::from_data(
            TensorData::new(last.iter().map(|&t| i64::from(t)).collect(), [last.len()]),
            &device,
        );
        let logits = model.next_logits(&mut cache, tokens);
        let vocab = logits.dims()[1];
        let log_probs = host_values(log_softmax(logits, 1).into_data())?;

        // Every allowed continuation of every live hypothesis; `None` ends the hypothesis.
        let mut candidates: Vec<(f32, usize, Option<u32>)> = Vec::new();
        for (row, hypothesis) in live.iter().enumerate() {
            let scores = &log_probs[row * vocab..(row + 1) * vocab];
            // A closed identifier (title or pseudo-query) can only end.
            if may_end(hypothesis, &view.end) {
                if let Some(&score) = scores.get(eos as usize) {
                    candidates.push((hypothesis.log_prob + score, row, None));
                }
                continue;
            }
            if hypothesis.tokens.len() >= view.max_tokens {
                continue;
            }
            let timer = Instant::now();
            for (token, _) in index.next_tokens(&hypothesis.prefix) {
                if let Some(&score) = scores.get(token as usize) {
                    candidates.push((hypothesis.log_prob + score, row, Some(token)));
                }
            }
            index_time += timer.elapsed();
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));

        let mut next = Vec::with_capacity(beam);
        let mut parents = Vec::with_capacity(beam);
        for (score, row, step) in candidates {
            match step {
                None if finished.len() < beam => {
                    let h = &live[row];
                    finished.push(FoundKey { tokens: h.tokens.clone(), log_prob: h.log_prob, count: h.prefix.count() });
                }
                None => {}
                Some(token) if next.len() < beam => {
                    // Only the kept continuations are extended in the index.
                    let timer = Instant::now();
                    let prefix = index.extend(&live[row].prefix, token);
                    index_time += timer.elapsed();
                    let mut tokens = live[row].tokens.clone();
                    tokens.push(token);
                    next.push(Hypothesis { tokens, prefix, log_prob: score });
                    parents.push(row as i64);
                }
                Some(_) => {}
            }
            if next.len() == beam && finished.len() == beam {
                break;
            }
        }
        if view.keys == KeepKeys::EveryPrefix {
            keys.extend(next.iter().map(|h| FoundKey {
                tokens: h.tokens.clone(),
                log_prob: h.log_prob,
                count: h.prefix.count(),
            }));
        }
        // Scores only fall: once the best live hypothesis is below the worst of a full set of
        // finished ones, nothing live can enter it.
        let worst_finished = finished.iter().map(|k| k.log_prob).fold(f32::INFINITY, f32::min);
        let best_live = next.iter().map(|h| h.log_prob).fold(f32::NEG_INFINITY, f32::max);
        if next.is_empty() || (view.keys == KeepKeys::Finished && finished.len() >= beam && best_live < worst_finished)
        {
            break;
        }
        let rows = parents.len();
        cache = cache.reorder(Tensor::from_data(TensorData::new(parents, [rows]), &device));
        last = next.iter().map(|h| *h.tokens.last().unwrap_or(&eos)).collect();
        live = next;
    }
    if view.keys == KeepKeys::Finished {
        keys = finished;
    }
    keys.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
    Ok(Search { keys, index_time })
}

fn may_end(hypothesis: &Hypothesis, end: &End) -> bool {
    match end {
        End::Never => false,
        End::AfterTokens(mark) => hypothesis.tokens.len() > mark.len() && hypothesis.tokens.ends_with(mark),
    }
}
