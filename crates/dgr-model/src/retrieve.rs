//! Generative retrieval for one query (method §2): the student decodes keys under the index's
//! constraint in each identifier view, the query's own word spans found in the corpus join them,
//! and [`dgr_index::evidence`] turns keys and unigram scores into ranked passages.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use dgr_core::views::{END_MARK, PSEUDO_QUERY_MARK, View};
use dgr_index::CorpusIndex;
use dgr_index::evidence::{Key, Ranking, ScoringConfig, Unigram, rank_passages};

use crate::beam::{End, FoundKey, KeepKeys, ViewSearch, search_keys_batch};
use crate::error::{Result, host_values};
use crate::seq2seq::{Encoded, EncoderDecoder, Source};
use crate::tokenizer::{TextTokenizer, batch};

/// How the student searches the index (`[retrieve.search]`; scoring is `[retrieve.scoring]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Beam width of every view.
    pub beam: usize,
    /// Length of decoded body spans, in tokens.
    pub body_tokens: usize,
    /// Longest title, `@@` included.
    pub title_tokens: usize,
    /// Longest pseudo-query, `@@` included.
    pub pseudo_query_tokens: usize,
    /// Longest span of query words added as a key.
    pub query_span_words: usize,
    /// Tokens of the student's first-step distribution that get unigram scores.
    pub unigram_tokens: usize,
    /// Passages returned per query.
    pub hits: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            beam: 15,
            body_tokens: 10,
            title_tokens: 15,
            pseudo_query_tokens: 30,
            query_span_words: 3,
            unigram_tokens: 5000,
            hits: 100,
        }
    }
}

pub use dgr_index::evidence::KeySource;

/// One query's ranking, where each of its keys came from (parallel to `ranking.keys`) and where
/// the time went.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub ranking: Ranking,
    pub key_sources: Vec<KeySource>,
    /// Encoder, decoder steps and key rescoring.
    pub model_time: Duration,
    /// Allowed-token lookups during decoding, counts, locates and passage scoring.
    pub index_time: Duration,
}

/// Token ids of the markers and special tokens retrieval needs.
#[derive(Debug, Clone)]
struct Markers {
    end: Vec<u32>,
    pseudo_query: Vec<u32>,
    eos: u32,
    special: HashSet<u32>,
}

/// A student, its tokenizer and the corpus index, ready to retrieve.
pub struct Retriever<'a, M: EncoderDecoder> {
    model: &'a M,
    tokenizer: &'a TextTokenizer,
    index: &'a CorpusIndex,
    config: RetrievalConfig,
    scoring: ScoringConfig,
    markers: Markers,
    device: Device,
}

impl<'a, M: EncoderDecoder> Retriever<'a, M> {
    /// `tokenizer` must be the one the index was built with (the marks it puts around a
    /// sequence, `[CLS]` / `[SEP]` or `<s>` / `</s>`, start and end the student's keys).
    pub fn new(
        model: &'a M,
        tokenizer: &'a TextTokenizer,
        index: &'a CorpusIndex,
        config: RetrievalConfig,
        scoring: ScoringConfig,
        device: Device,
    ) -> Result<Self> {
        let marks = tokenizer.tokens(vec![END_MARK.to_string(), PSEUDO_QUERY_MARK.to_string()])?;
        let (_, eos) = tokenizer.sequence_marks()?;
        let special = tokenizer.special_ids().into_iter().collect();
        let markers = Markers { end: marks[0].clone(), pseudo_query: marks[1].clone(), eos, special };
        Ok(Retriever { model, tokenizer, index, config, scoring, markers, device })
    }

    /// The decoding set-up of `view`; `None` when the corpus has nothing to decode there (no
    /// pseudo-queries).
    fn view_search(&self, view: View) -> Option<ViewSearch> {
        let index = self.index;
        let (start, forced, max_tokens, end, keys) = match view {
            View::Body => (index.root(), Vec::new(), self.config.body_tokens, End::Never, KeepKeys::EveryPrefix),
            View::Title => (
                index.passage_start(),
                Vec::new(),
                self.config.title_tokens,
                End::AfterTokens(self.markers.end.clone()),
                KeepKeys::Finished,
            ),
            View::PseudoQuery => (
                index.prefix(&self.markers.pseudo_query),
                self.markers.pseudo_query.clone(),
                self.config.pseudo_query_tokens,
                End::AfterTokens(self.markers.end.clone()),
                KeepKeys::Finished,
            ),
        };
        (start.count() > 0).then_some(ViewSearch { start, forced, max_tokens, end, keys })
    }

    /// Ranks passages for each of `queries`. Their views are decoded together: one encoder
    /// pass over every (query, view) source and one decoder pass per step over all beams. The
    /// model time of that shared work is split evenly between the queries.
    pub fn retrieve_batch(&self, queries: &[&str]) -> Result<Vec<Retrieved>> {
        let started = Instant::now();
        // Which (query, view) each search is; every query has a body search, whose first step
        // is also the unigram distribution.
        let views: Vec<(View, ViewSearch)> =
            View::ALL.into_iter().filter_map(|view| Some((view, self.view_search(view)?))).collect();
        let mut owners: Vec<(usize, View)> = Vec::new();
        let mut searches: Vec<ViewSearch> = Vec::new();
        let mut sources = Vec::new();
        for (q, query) in queries.iter().enumerate() {
            for (view, search) in &views {
                sources.push(self.tokenizer.encode(&view.source(query))?);
                owners.push((q, *view));
                searches.push(search.clone());
            }
        }
        let input = batch(&sources, &self.device);
        let encoded = self.model.encode(&Source { ids: input.input_ids, mask: input.attention_mask });
        let found = search_keys_batch(self.model, self.index, &encoded, &searches, self.config.beam, self.markers.eos)?;
        let shared_index_time: Duration = found.iter().map(|f| f.index_time).sum();
        let shared_model_time = started.elapsed().saturating_sub(shared_index_time) / queries.len().max(1) as u32;

        let mut results = Vec::with_capacity(queries.len());
        for (q, query) in queries.iter().enumerate() {
            let started = Instant::now();
            let mut index_time = Duration::ZERO;
            let mut keys: Vec<Key> = Vec::new();
            let mut key_sources: Vec<KeySource> = Vec::new();
            let mut body_row = 0;
            let mut first_log_probs: &[f32] = &[];
            for (row, (&(owner, view), search)) in owners.iter().zip(&searches).enumerate() {
                if owner != q {
                    continue;
                }
                index_time += found[row].index_time;
                for FoundKey { tokens, log_prob, .. } in &found[row].keys {
                    let tokens = search.forced.iter().chain(tokens).copied().collect();
                    keys.push(Key {
                        tokens,
                        anchored: view == View::Title,
                        log_prob: f64::from(*log_prob),
                        scale: self.scoring.source_weights.of(KeySource::Decoded(view)),
                    });
                    key_sources.push(KeySource::Decoded(view));
                }
                if view == View::Body {
                    body_row = row;
                    first_log_probs = &found[row].first_log_probs;
                }
            }
            let body = Encoded {
                states: encoded.states.clone().slice(body_row..body_row + 1),
                mask: encoded.mask.clone().slice(body_row..body_row + 1),
            };
            let (spans, span_time) = self.query_spans(query, &keys)?;
            index_time += span_time;
            if !spans.is_empty() {
                let scores = host_values(self.model.score_keys(&body, &spans).into_data())?;
                for (tokens, score) in spans.into_iter().zip(scores) {
                    keys.push(Key {
                        tokens,
                        anchored: false,
                        log_prob: f64::from(score),
                        scale: self.scoring.source_weights.of(KeySource::QuerySpan),
                    });
                    key_sources.push(KeySource::QuerySpan);
                }
            }
            let unigrams = self.unigrams(first_log_probs);
            let timer = Instant::now();
            let ranking = rank_passages(self.index, &keys, &unigrams, &self.scoring, self.config.hits);
            index_time += timer.elapsed();
            let ranked_sources = ranking
                .keys
                .iter()
                .map(|k| {
                    keys.iter()
                        .position(|key| key.tokens == k.tokens && key.anchored == k.anchored)
                        .map_or(KeySource::Unigram, |i| key_sources[i])
                })
                .collect();
            let own_model_time = started.elapsed().saturating_sub(index_time);
            results.push(Retrieved {
                ranking,
                key_sources: ranked_sources,
                model_time: shared_model_time + own_model_time,
                index_time,
            });
        }
        Ok(results)
    }

    /// Spans of up to `query_span_words` words of `query` that occur in the corpus and are not
    /// keys already, and the index time spent finding them.
    fn query_spans(&self, query: &str, keys: &[Key]) -> Result<(Vec<Vec<u32>>, Duration)> {
        let words: Vec<&str> = query.split_whitespace().collect();
        let mut spans = Vec::new();
        for length in 1..=self.config.query_span_words.min(words.len()) {
            spans.extend(words.windows(length).map(|w| w.join(" ")));
        }
        let span_tokens = self.tokenizer.tokens(spans)?;
        let timer = Instant::now();
        let mut known: HashSet<&[u32]> = keys.iter().filter(|k| !k.anchored).map(|k| k.tokens.as_slice()).collect();
        let mut found = Vec::new();
        for tokens in &span_tokens {
            if !tokens.is_empty() && known.insert(tokens) && self.index.count(tokens) > 0 {
                found.push(tokens.clone());
            }
        }
        Ok((found, timer.elapsed()))
    }

    /// The best `unigram_tokens` of the student's first-step log-probabilities under the body
    /// prompt, special tokens left out.
    fn unigrams(&self, log_probs: &[f32]) -> Vec<Unigram> {
        let mut unigrams: Vec<Unigram> = log_probs
            .iter()
            .enumerate()
            .filter(|(t, _)| !self.markers.special.contains(&(*t as u32)))
            .map(|(t, &lp)| Unigram { token: t as u32, log_prob: f64::from(lp) })
            .collect();
        unigrams.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
        unigrams.truncate(self.config.unigram_tokens);
        unigrams
    }
}
