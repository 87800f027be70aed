//! Multiview (source, target) pairs for stage-1 training (method §1).
//!
//! A view is chosen by a prompt suffix on the source, and each view has its target form:
//!
//! | view | source | target |
//! |---|---|---|
//! | title | `<text> \|\| title \|\| +` | `<title> @@` (`@@` closes a title) |
//! | body | `<text> \|\| body \|\| +` | a span of `span_words` words of the passage |
//! | pseudo-query | `<text> \|\| query \|\| +` | `<pseudo-query> @@`, one of the passage's |
//!
//! Supervised pairs take a training query as `<text>`; unsupervised pairs take the passage's own
//! title or pseudo-queries, so every passage of the corpus is seen even without queries. Body
//! spans are sampled with a preference for spans that share words with the source: a span's
//! weight is `1 + overlap_bonus * shared words`. Sampling is seeded: the same inputs and seed
//! give the same pairs.

use std::collections::HashSet;

use dgr_core::{Passage, Query};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dgr_core::views::END_MARK;
pub use dgr_core::views::View;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingPair {
    pub source: String,
    pub target: String,
    pub view: View,
}

/// How many pairs of each view, per (query, positive) and per passage.
#[derive(Debug, Clone, PartialEq)]
pub struct PairConfig {
    /// Title pairs per positive (the reference repeats the title target 3 times).
    pub titles: usize,
    /// Body-span pairs per positive (reference: 10).
    pub spans: usize,
    /// Pseudo-query pairs per positive, where the passage has pseudo-queries (reference: 5).
    pub pseudo_queries: usize,
    /// Words per body span (reference: 10).
    pub span_words: usize,
    /// Extra weight per word a span shares with the source.
    pub overlap_bonus: f64,
    /// Also build pairs from the corpus alone (title -> span, pseudo-query -> title).
    pub unsupervised: bool,
    pub seed: u64,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig {
            titles: 3,
            spans: 10,
            pseudo_queries: 5,
            span_words: 10,
            overlap_bonus: 4.0,
            unsupervised: true,
            seed: 42,
        }
    }
}

fn source(text: &str, view: View) -> String {
    view.source(text)
}

/// A title or pseudo-query target, closed by `@@` as in the index layout, so that decoding can
/// require complete identifiers.
fn closed(identifier: &str) -> String {
    format!("{} {END_MARK}", identifier.trim())
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

fn normalized(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()
}

/// Samples `count` spans of `config.span_words` words from `text`, weighted towards spans that
/// share words with `context`. A passage shorter than a span gives itself.
fn sample_spans(text: &str, context: &str, count: usize, config: &PairConfig, rng: &mut StdRng) -> Vec<String> {
    let tokens = words(text);
    if tokens.is_empty() || count == 0 {
        return Vec::new();
    }
    let width = config.span_words.max(1).min(tokens.len());
    let context: HashSet<String> = words(context).iter().map(|w| normalized(w)).filter(|w| !w.is_empty()).collect();
    let weights: Vec<f64> = tokens
        .windows(width)
        .map(|span| {
            let shared = span.iter().filter(|w| context.contains(&normalized(w))).count();
            1.0 + config.overlap_bonus * shared as f64
        })
        .collect();
    let total: f64 = weights.iter().sum();
    (0..count)
        .map(|_| {
            let mut pick = rng.random::<f64>() * total;
            let start = weights
                .iter()
                .position(|w| {
                    pick -= w;
                    pick < 0.0
                })
                .unwrap_or(weights.len() - 1);
            tokens[start..start + width].join(" ")
        })
        .collect()
}

/// Pairs for one (query text, relevant passage).
pub fn supervised_pairs(query: &str, passage: &Passage, config: &PairConfig, rng: &mut StdRng) -> Vec<TrainingPair> {
    let mut pairs = Vec::new();
    if !passage.title.trim().is_empty() {
        for _ in 0..config.titles {
            pairs.push(TrainingPair {
                source: source(query, View::Title),
                target: closed(&passage.title),
                view: View::Title,
            });
        }
    }
    for span in sample_spans(&passage.text, query, config.spans, config, rng) {
        pairs.push(TrainingPair { source: source(query, View::Body), target: span, view: View::Body });
    }
    if !passage.pseudo_queries.is_empty() {
        for _ in 0..config.pseudo_queries {
            let pq = &passage.pseudo_queries[rng.random_range(0..passage.pseudo_queries.len())];
            pairs.push(TrainingPair {
                source: source(query, View::PseudoQuery),
                target: closed(pq),
                view: View::PseudoQuery,
            });
        }
    }
    pairs
}

/// Pairs from a passage alone: its title (or, without a title, its first pseudo-query) asks
/// for body spans, and each pseudo-query asks for the title.
pub fn unsupervised_pairs(passage: &Passage, config: &PairConfig, rng: &mut StdRng) -> Vec<TrainingPair> {
    let mut pairs = Vec::new();
    let anchor = if passage.title.trim().is_empty() { passage.pseudo_queries.first() } else { Some(&passage.title) };
    if let Some(anchor) = anchor {
        for span in sample_spans(&passage.text, anchor, config.spans, config, rng) {
            pairs.push(TrainingPair { source: source(anchor, View::Body), target: span, view: View::Body });
        }
    }
    if !passage.title.trim().is_empty() {
        for pq in passage.pseudo_queries.iter().take(config.pseudo_queries) {
            pairs.push(TrainingPair {
                source: source(pq, View::Title),
                target: closed(&passage.title),
                view: View::Title,
            });
        }
    }
    pairs
}

/// All stage-1 pairs: supervised pairs for each `(query, relevant passage ids)`, then (if
/// configured) unsupervised pairs for every passage. Relevant ids missing from `corpus` are
/// returned separately so the caller can report them.
pub fn build_pairs<'a>(
    corpus: &'a [Passage],
    judged: impl IntoIterator<Item = (&'a Query, Vec<&'a str>)>,
    config: &PairConfig,
) -> (Vec<TrainingPair>, Vec<String>) {
    let by_id: std::collections::HashMap<&str, &Passage> = corpus.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut pairs = Vec::new();
    let mut unknown = Vec::new();
    for (query, relevant) in judged {
        for id in relevant {
            match by_id.get(id) {
                Some(passage) => pairs.extend(supervised_pairs(&query.text, passage, config, &mut rng)),
                None => unknown.push(id.to_string()),
            }
        }
    }
    if config.unsupervised {
        for passage in corpus {
            pairs.extend(unsupervised_pairs(passage, config, &mut rng));
        }
    }
    (pairs, unknown)
}
