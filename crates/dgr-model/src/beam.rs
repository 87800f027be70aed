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
    /// The student's log-probabilities of the first token (the search's first step, `[vocab]`).
    pub first_log_probs: Vec<f32>,
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
    let mut searches = search_keys_batch(model, index, encoded, std::slice::from_ref(view), beam, eos)?;
    Ok(searches.pop().unwrap_or(Search { keys: Vec::new(), first_log_probs: Vec::new(), index_time: Duration::ZERO }))
}

/// Runs one constrained beam search per row of `encoded` (search `i` decodes for source row
/// `i`, as `views[i]` says), all in the same decoder passes: every step feeds the live
/// hypotheses of every search as one batch. Returns the searches' keys in `views` order.
pub fn search_keys_batch(
    model: &impl EncoderDecoder,
    index: &CorpusIndex,
    encoded: &Encoded,
    views: &[ViewSearch],
    beam: usize,
    eos: u32,
) -> Result<Vec<Search>> {
    let device = encoded.states.device();
    let mut cache = model.start_decoding(encoded);
    let mut searches: Vec<BeamState> = views.iter().map(BeamState::new).collect();
    let mut last = vec![model.decoder_start(); views.len()];
    let steps = views.iter().map(|v| v.max_tokens).max().unwrap_or(0);
    // One step more than `max_tokens`, where an identifier closed on the last token ends.
    for _ in 0..=steps {
        if beam == 0 || searches.iter().all(|s| !s.is_open()) {
            break;
        }
        let tokens = Tensor::<1, Int>::from_data(
            TensorData::new(last.iter().map(|&t| i64::from(t)).collect(), [last.len()]),
            &device,
        );
        let logits = model.next_logits(&mut cache, tokens);
        let vocab = logits.dims()[1];
        let log_probs = host_values(log_softmax(logits, 1).into_data())?;

        let mut parents = Vec::new();
        let mut next_last = Vec::new();
        let mut row = 0;
        for search in &mut searches {
            let live = search.live.len();
            let chosen = search.step(index, &log_probs[row * vocab..(row + live) * vocab], vocab, beam, eos);
            for (hypothesis, parent) in search.live.iter().zip(chosen) {
                parents.push((row + parent) as i64);
                next_last.push(*hypothesis.tokens.last().unwrap_or(&eos));
            }
            row += live;
        }
        if parents.is_empty() {
            break;
        }
        let count = parents.len();
        cache = cache.reorder(Tensor::from_data(TensorData::new(parents, [count]), &device));
        last = next_last;
    }
    Ok(searches.into_iter().map(BeamState::finish).collect())
}

/// One view's search: its live hypotheses, finished identifiers and keys so far.
struct BeamState<'v> {
    view: &'v ViewSearch,
    live: Vec<Hypothesis>,
    finished: Vec<FoundKey>,
    keys: Vec<FoundKey>,
    first_log_probs: Vec<f32>,
    index_time: Duration,
}

impl<'v> BeamState<'v> {
    fn new(view: &'v ViewSearch) -> Self {
        BeamState {
            view,
            live: vec![Hypothesis { tokens: Vec::new(), prefix: view.start.clone(), log_prob: 0.0 }],
            finished: Vec::new(),
            keys: Vec::new(),
            first_log_probs: Vec::new(),
            index_time: Duration::ZERO,
        }
    }

    /// Whether a live hypothesis can still grow or end.
    fn is_open(&self) -> bool {
        let max = self.view.max_tokens;
        self.live.iter().any(|h| h.tokens.len() < max || may_end(h, &self.view.end))
    }

    /// Advances the search by one token given the log-probabilities of its live hypotheses
    /// (`scores`, `[live, vocab]` flattened); returns, for each new live hypothesis, the
    /// index of its parent among the old ones.
    fn step(&mut self, index: &CorpusIndex, scores: &[f32], vocab: usize, beam: usize, eos: u32) -> Vec<usize> {
        if self.first_log_probs.is_empty() {
            self.first_log_probs = scores.get(..vocab).map(<[f32]>::to_vec).unwrap_or_default();
        }
        if !self.is_open() {
            self.live.clear();
            return Vec::new();
        }
        let view = self.view;
        // Every allowed continuation of every live hypothesis; `None` ends the hypothesis.
        let mut candidates: Vec<(f32, usize, Option<u32>)> = Vec::new();
        for (row, hypothesis) in self.live.iter().enumerate() {
            let scores = &scores[row * vocab..(row + 1) * vocab];
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
            self.index_time += timer.elapsed();
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));

        let mut next = Vec::with_capacity(beam);
        let mut parents = Vec::with_capacity(beam);
        for (score, row, step) in candidates {
            match step {
                None if self.finished.len() < beam => {
                    let h = &self.live[row];
                    self.finished.push(FoundKey {
                        tokens: h.tokens.clone(),
                        log_prob: h.log_prob,
                        count: h.prefix.count(),
                    });
                }
                None => {}
                Some(token) if next.len() < beam => {
                    // Only the kept continuations are extended in the index.
                    let timer = Instant::now();
                    let prefix = index.extend(&self.live[row].prefix, token);
                    self.index_time += timer.elapsed();
                    let mut tokens = self.live[row].tokens.clone();
                    tokens.push(token);
                    next.push(Hypothesis { tokens, prefix, log_prob: score });
                    parents.push(row);
                }
                Some(_) => {}
            }
            if next.len() == beam && self.finished.len() == beam {
                break;
            }
        }
        if view.keys == KeepKeys::EveryPrefix {
            self.keys.extend(next.iter().map(|h| FoundKey {
                tokens: h.tokens.clone(),
                log_prob: h.log_prob,
                count: h.prefix.count(),
            }));
        }
        // Scores only fall: once the best live hypothesis is below the worst of a full set of
        // finished ones, nothing live can enter it.
        let worst_finished = self.finished.iter().map(|k| k.log_prob).fold(f32::INFINITY, f32::min);
        let best_live = next.iter().map(|h| h.log_prob).fold(f32::NEG_INFINITY, f32::max);
        if view.keys == KeepKeys::Finished && self.finished.len() >= beam && best_live < worst_finished {
            next.clear();
            parents.clear();
        }
        self.live = next;
        // A search that cannot go on leaves the batch now rather than after one more pass.
        if !self.is_open() {
            self.live.clear();
            parents.clear();
        }
        parents
    }

    fn finish(self) -> Search {
        let mut keys = if self.view.keys == KeepKeys::Finished { self.finished } else { self.keys };
        keys.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
        Search { keys, first_log_probs: self.first_log_probs, index_time: self.index_time }
    }
}

fn may_end(hypothesis: &Hypothesis, end: &End) -> bool {
    match end {
        End::Never => false,
        End::AfterTokens(mark) => hypothesis.tokens.len() > mark.len() && hypothesis.tokens.ends_with(mark),
    }
}
