//! From keys to ranked passages (method §2, computed as SEAL/MINDER do): each key's weight
//! weighs the student's probability of the key against its corpus frequency, and a passage
//! scores the weights of the keys found in it, greedily and without overlap, plus unigram
//! scores for the tokens no key covers.
//!
//! - Key weight: `w = scale · max(0, logit P(k|q) - logit P(k))^exponent`,
//!   `P(k) = (count + s) / (N + s)`; the scale is the [`SourceWeights`] entry of where the key
//!   came from (SEAL's is 1 for every source; dgr weighs the query's own spans 32 by default).
//! - Coverage: a key's weight is scaled by `1 - β + β · |new token ids| / |token ids|`, where the
//!   token ids already covered by the passage's earlier keys are not new.
//! - Candidates: only keys with at most `max_hits` occurrences propose passages (first stage);
//!   the best `candidates` of those are scored in full with every key.

use std::collections::{BTreeSet, HashMap, HashSet};

use dgr_core::views::View;

use crate::corpus::{CorpusIndex, Prefix};

/// A key found for a query: token ids matched in the index and the student's log P(key | query).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub tokens: Vec<u32>,
    /// Matched only at the start of a passage (titles).
    pub anchored: bool,
    pub log_prob: f64,
    /// Multiplies the key's weight: its source's entry in [`SourceWeights`].
    pub scale: f64,
}

/// The student's log-probability of a single token as an identifier (its first-step
/// distribution): scores the passage tokens that no key covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unigram {
    pub token: u32,
    pub log_prob: f64,
}

/// How keys weigh and passages score (`[retrieve.scoring]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// `s` in `P(k) = (count + s) / (N + s)`.
    pub smoothing: f64,
    /// The log-odds are clamped at 0 and raised to this power.
    pub exponent: f64,
    /// β of the coverage factor.
    pub coverage: f64,
    /// Keys with more occurrences do not propose candidate passages.
    pub max_hits: u64,
    /// Passages scored in full.
    pub candidates: usize,
    /// How much a key counts by where it came from.
    pub source_weights: SourceWeights,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            smoothing: 5.0,
            exponent: 2.0,
            coverage: 0.8,
            max_hits: 1500,
            candidates: 1500,
            source_weights: SourceWeights::default(),
        }
    }
}

/// Where a key came from: decoded by the student under a view's prompt, a span of the query's
/// own words found in the corpus, or one of the best unigrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySource {
    Decoded(View),
    QuerySpan,
    Unigram,
}

impl KeySource {
    /// Every source, in the order candidate shards document them.
    pub const ALL: [KeySource; 5] = [
        KeySource::Decoded(View::Title),
        KeySource::Decoded(View::Body),
        KeySource::Decoded(View::PseudoQuery),
        KeySource::QuerySpan,
        KeySource::Unigram,
    ];

    /// The name candidate shards store (`title`, `body`, `pseudo-query`, `query-span`, `unigram`).
    pub fn name(self) -> &'static str {
        match self {
            KeySource::Decoded(view) => view.name(),
            KeySource::QuerySpan => "query-span",
            KeySource::Unigram => "unigram",
        }
    }

    /// The source a stored name stands for; `None` for a name retrieval never writes.
    pub fn parse(name: &str) -> Option<KeySource> {
        KeySource::ALL.into_iter().find(|source| source.name() == name)
    }
}

/// Factors on key weights by the key's source (`[retrieve.scoring.source_weights]`). The views
/// do not deserve the same trust: a decoded title that is wrong points at one wrong passage
/// with the largest weight there is, while the query's own words found in a passage are rarely
/// wrong (docs/benchmarks.md, the error analysis).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceWeights {
    /// Decoded titles.
    pub title: f64,
    /// Decoded body spans.
    pub body: f64,
    /// Decoded pseudo-queries.
    pub pseudo_query: f64,
    /// Spans of the query's own words found in the corpus.
    pub query_span: f64,
    /// Unigram keys and the unigram scores of uncovered tokens.
    pub unigram: f64,
}

impl Default for SourceWeights {
    fn default() -> Self {
        // SEAL weighs every source alike; on wiki-vital dev, query spans weighted 32 lift R@5
        // from 23.9 to 59.0 (docs/benchmarks.md).
        SourceWeights { title: 1.0, body: 1.0, pseudo_query: 1.0, query_span: 32.0, unigram: 1.0 }
    }
}

impl SourceWeights {
    /// The factor of keys from `source`.
    pub fn of(&self, source: KeySource) -> f64 {
        match source {
            KeySource::Decoded(View::Title) => self.title,
            KeySource::Decoded(View::Body) => self.body,
            KeySource::Decoded(View::PseudoQuery) => self.pseudo_query,
            KeySource::QuerySpan => self.query_span,
            KeySource::Unigram => self.unigram,
        }
    }

    /// Every factor must be finite and non-negative (0 turns a source off).
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("title", self.title),
            ("body", self.body),
            ("pseudo_query", self.pseudo_query),
            ("query_span", self.query_span),
            ("unigram", self.unigram),
        ];
        match named.iter().find(|(_, w)| !w.is_finite() || *w < 0.0) {
            Some((name, w)) => Err(format!("source_weights.{name} = {w}: a weight must be finite and at least 0")),
            None => Ok(()),
        }
    }
}

/// A key with its corpus count and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedKey {
    pub tokens: Vec<u32>,
    pub anchored: bool,
    pub log_prob: f64,
    pub count: u64,
    pub weight: f64,
}

/// A key that counted for a passage, with the weight it added (after coverage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedKey {
    /// Index into [`Ranking::keys`].
    pub key: usize,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RankedPassage {
    /// The passage's index in corpus order.
    pub passage: u32,
    pub score: f64,
    pub keys: Vec<MatchedKey>,
    /// What the unigram scores of uncovered tokens added.
    pub unigram_score: f64,
}

/// The ranked passages of one query and the weighted keys they refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub keys: Vec<WeightedKey>,
    pub passages: Vec<RankedPassage>,
}

/// `log(1 - e^x)` for `x < 0`, accurate near 0 and for large `|x|`.
fn ln_one_minus_exp(x: f64) -> f64 {
    if x > -std::f64::consts::LN_2 { (-x.exp_m1()).ln() } else { (-x.exp()).ln_1p() }
}

/// `logit P(k|q) - logit P(k)`; the student's log-probability is kept just below 0 so that a
/// certain key stays finite (as SEAL does).
pub fn log_odds(log_prob: f64, count: u64, total_tokens: u64, smoothing: f64) -> f64 {
    let student = log_prob.min(0.0) - 1e-10;
    let corpus = ((count as f64 + smoothing) / (total_tokens as f64 + smoothing)).ln();
    (student + ln_one_minus_exp(corpus)) - (corpus + ln_one_minus_exp(student))
}

/// The weight of a key before its source's scale: clamped log-odds raised to `exponent`; 0 for
/// a key not in the corpus.
pub fn key_weight(log_prob: f64, count: u64, total_tokens: u64, config: &ScoringConfig) -> f64 {
    weight_and_slope(log_prob, count, total_tokens, config.smoothing, config.exponent).0
}

/// A weight `max(0, log-odds)^exponent` (retrieval's keys use the configured exponent, unigram
/// scores 1) and its derivative in the student's log-probability, which stage-2 training
/// follows: `d log-odds / d log_prob = 1 / (1 - P(k|q))` below the clamp at 0, 0 above it.
pub fn weight_and_slope(log_prob: f64, count: u64, total_tokens: u64, smoothing: f64, exponent: f64) -> (f64, f64) {
    if count == 0 {
        return (0.0, 0.0);
    }
    let odds = log_odds(log_prob, count, total_tokens, smoothing);
    if odds <= 0.0 {
        return (0.0, 0.0);
    }
    let student = log_prob.min(0.0) - 1e-10;
    let odds_slope = if log_prob < 0.0 { 1.0 / -student.exp_m1() } else { 0.0 };
    (odds.powf(exponent), exponent * odds.powf(exponent - 1.0) * odds_slope)
}

/// The coverage factor of `tokens` given the token ids already `covered`.
pub fn coverage_factor(tokens: &[u32], covered: &HashSet<u32>, beta: f64) -> f64 {
    let distinct: HashSet<u32> = tokens.iter().copied().collect();
    if distinct.is_empty() {
        return 1.0;
    }
    let new = distinct.iter().filter(|t| !covered.contains(t)).count();
    1.0 - beta + beta * new as f64 / distinct.len() as f64
}

/// Ranks passages for one query from its keys and unigram log-probabilities (one entry per
/// token); returns at most `hits` passages, best first (ties keep the order in which passages
/// were proposed).
pub fn rank_passages(
    index: &CorpusIndex,
    keys: &[Key],
    unigrams: &[Unigram],
    config: &ScoringConfig,
    hits: usize,
) -> Ranking {
    let total = index.total_tokens();
    let mut weighted: Vec<WeightedKey> = Vec::new();
    let mut prefixes: Vec<Prefix> = Vec::new();
    let mut seen: HashSet<(bool, &[u32])> = HashSet::new();
    for key in keys {
        if key.tokens.is_empty() || !seen.insert((key.anchored, key.tokens.as_slice())) {
            continue;
        }
        let start = if key.anchored { index.passage_start() } else { index.root() };
        let prefix = key.tokens.iter().fold(start, |p, &t| index.extend(&p, t));
        let count = prefix.count();
        let weight = key.scale * key_weight(key.log_prob, count, total, config);
        if weight > 0.0 {
            weighted.push(WeightedKey {
                tokens: key.tokens.clone(),
                anchored: key.anchored,
                log_prob: key.log_prob,
                count,
                weight,
            });
            prefixes.push(prefix);
        }
    }

    // Unigram scores: clamped log-odds, not raised; tokens that are keys on their own are left
    // to their key. The best of them also serve as keys, as many as there are keys already.
    let single: HashSet<u32> = weighted.iter().filter(|k| k.tokens.len() == 1).map(|k| k.tokens[0]).collect();
    let mut scored_unigrams: Vec<(&Unigram, Prefix, f64)> = Vec::new();
    for u in unigrams {
        if single.contains(&u.token) {
            continue;
        }
        let prefix = index.extend(&index.root(), u.token);
        let weight =
            config.source_weights.unigram * log_odds(u.log_prob, prefix.count(), total, config.smoothing).max(0.0);
        if weight > 0.0 {
            scored_unigrams.push((u, prefix, weight));
        }
    }
    let unigram_weights: HashMap<u32, f64> = scored_unigrams.iter().map(|(u, _, w)| (u.token, *w)).collect();
    scored_unigrams.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.token.cmp(&b.0.token)));
    scored_unigrams.truncate(weighted.len());
    for (u, prefix, weight) in scored_unigrams {
        weighted.push(WeightedKey {
            tokens: vec![u.token],
            anchored: false,
            log_prob: u.log_prob,
            count: prefix.count(),
            weight,
        });
        prefixes.push(prefix);
    }

    let candidates = propose_candidates(index, &weighted, &prefixes, config);
    let mut by_first_token: HashMap<u32, Vec<usize>> = HashMap::new();
    for (k, key) in weighted.iter().enumerate() {
        by_first_token.entry(key.tokens[0]).or_default().push(k);
    }
    let mut passages: Vec<RankedPassage> = candidates
        .into_iter()
        .map(|passage| score_passage(index, passage, &weighted, &by_first_token, &unigram_weights, config))
        .collect();
    passages.sort_by(|a, b| b.score.total_cmp(&a.score));
    passages.truncate(hits);
    Ranking { keys: weighted, passages }
}

/// First stage: the passages where rare keys occur, scored by those keys (each occurrence
/// counts once over the whole corpus, coverage applied per passage); the best
/// `config.candidates` in proposal order on ties.
fn propose_candidates(
    index: &CorpusIndex,
    keys: &[WeightedKey],
    prefixes: &[Prefix],
    config: &ScoringConfig,
) -> Vec<u32> {
    let mut rare: Vec<usize> = (0..keys.len()).filter(|&k| keys[k].count <= config.max_hits).collect();
    rare.sort_by(|&a, &b| keys[b].weight.total_cmp(&keys[a].weight));
    let mut taken: HashSet<(u32, u32)> = HashSet::new();
    let mut order: Vec<u32> = Vec::new();
    let mut found: HashMap<u32, Vec<usize>> = HashMap::new();
    for k in rare {
        let length = keys[k].tokens.len() as u32;
        for occurrence in index.locate_prefix(&prefixes[k], config.max_hits as usize) {
            let span = occurrence.offset..occurrence.offset + length;
            if span.clone().any(|o| taken.contains(&(occurrence.passage, o))) {
                continue;
            }
            taken.extend(span.map(|o| (occurrence.passage, o)));
            let keys_here = found.entry(occurrence.passage).or_insert_with(|| {
                order.push(occurrence.passage);
                Vec::new()
            });
            if !keys_here.contains(&k) {
                keys_here.push(k);
            }
        }
    }
    let mut scored: Vec<(u32, f64)> = order
        .into_iter()
        .map(|passage| {
            let mut covered = HashSet::new();
            let score = found[&passage]
                .iter()
                .map(|&k| {
                    let factor = coverage_factor(&keys[k].tokens, &covered, config.coverage);
                    covered.extend(keys[k].tokens.iter().copied());
                    factor * keys[k].weight
                })
                .sum();
            (passage, score)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(config.candidates);
    scored.into_iter().map(|(passage, _)| passage).collect()
}

/// Full scoring of one passage: every occurrence of every key in its text, highest weight
/// first, skipping occurrences that overlap accepted ones; a key counts once. Then the unigram
/// scores of the distinct tokens at positions no key covers. `by_first_token` lists the keys by their first token, so that each text position is only
/// compared with the keys that can start there.
fn score_passage(
    index: &CorpusIndex,
    passage: u32,
    keys: &[WeightedKey],
    by_first_token: &HashMap<u32, Vec<usize>>,
    unigram_weights: &HashMap<u32, f64>,
    config: &ScoringConfig,
) -> RankedPassage {
    let text = index.passage_tokens(passage);
    let mut occurrences: Vec<(usize, usize)> = Vec::new(); // (key, start)
    for (start, token) in text.iter().enumerate() {
        for &k in by_first_token.get(token).map_or(&[][..], Vec::as_slice) {
            let key = &keys[k];
            if (!key.anchored || start == 0) && text[start..].starts_with(&key.tokens) {
                occurrences.push((k, start));
            }
        }
    }
    occurrences.sort_by(|a, b| {
        keys[b.0].weight.total_cmp(&keys[a.0].weight).then(keys[a.0].tokens.cmp(&keys[b.0].tokens)).then(a.1.cmp(&b.1))
    });

    let mut taken = vec![false; text.len()];
    let mut covered: HashSet<u32> = HashSet::new();
    let mut matched: Vec<MatchedKey> = Vec::new();
    for (k, start) in occurrences {
        let span = start..start + keys[k].tokens.len();
        if taken[span.clone()].iter().any(|&t| t) {
            continue;
        }
        if matched.iter().any(|m| m.key == k) {
            taken[span].iter_mut().for_each(|t| *t = true);
            continue;
        }
        let score = coverage_factor(&keys[k].tokens, &covered, config.coverage) * keys[k].weight;
        if score <= 0.0 {
            continue;
        }
        taken[span].iter_mut().for_each(|t| *t = true);
        covered.extend(keys[k].tokens.iter().copied());
        matched.push(MatchedKey { key: k, score });
    }
    let free: BTreeSet<u32> = text.iter().zip(&taken).filter(|(_, t)| !**t).map(|(&token, _)| token).collect();
    let unigram_score: f64 = free
        .iter()
        .filter_map(|t| unigram_weights.get(t).map(|w| coverage_factor(&[*t], &covered, config.coverage) * w))
        .sum();
    let score = matched.iter().map(|m| m.score).sum::<f64>() + unigram_score;
    RankedPassage { passage, score, keys: matched, unigram_score }
}
