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
//! Supervised pairs take a training query as `<text>`. Body spans of supervised pairs are
//! sampled with a preference for spans that share words with the query: a span's weight is
//! `1 + overlap_bonus * shared words`.
//!
//! Unsupervised pairs index the corpus itself, so that passages no training query points at
//! are still learnt as targets (SEAL's `make_unsupervised_dataset.py`, its counts by default):
//! per passage, its whole text → its title; `title_span_pairs` pairs that are each at random a
//! span → the title or the title → a span; `span_pairs` span → another span; and each
//! pseudo-query → the title (MINDER). Target spans that start with a stop word, end a sentence
//! (`.?!`) or open a bracket are drawn again; a `lowercase_sources` share of the sources is
//! lower-cased. Sampling is seeded: the same inputs and seed give the same pairs.

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

/// How many pairs of each view, per (query, positive) and per passage (`[train_gen.pairs]`;
/// keys left out keep their defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    /// Also build pairs from the corpus alone (SEAL's indexing pairs, see the module docs).
    pub unsupervised: bool,
    /// Unsupervised: whole passage text → title pairs per passage (SEAL: 1).
    pub passage_title_pairs: usize,
    /// Unsupervised: pairs per passage that are, at random, span → title or title → span
    /// (SEAL: 3).
    pub title_span_pairs: usize,
    /// Unsupervised: span → span pairs per passage (SEAL: 10).
    pub span_pairs: usize,
    /// Unsupervised: share of sources lower-cased (SEAL: 0.1).
    pub lowercase_sources: f64,
    /// Seed of the sampling (the run's seed, not a setting of its own).
    #[serde(skip)]
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
            passage_title_pairs: 1,
            title_span_pairs: 3,
            span_pairs: 10,
            lowercase_sources: 0.1,
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
pub fn sample_spans(text: &str, context: &str, count: usize, config: &PairConfig, rng: &mut StdRng) -> Vec<String> {
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

/// Words a target span may not start with (SEAL's list of English stop words).
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// A span worth generating: it does not start with a stop word or a bracket, nor end a sentence.
fn good_target(span: &str) -> bool {
    let first = span.split_whitespace().next().unwrap_or_default();
    !(STOP_WORDS.contains(&first.to_lowercase().as_str())
        || first.starts_with(['(', '['])
        || span.ends_with(['.', '?', '!']))
}

/// A uniformly drawn span of `words` words of `text` (the whole text if shorter); as targets,
/// spans are drawn again until [`good_target`] accepts one (100 tries: a passage may have none).
fn random_span(text: &[&str], words: usize, target: bool, rng: &mut StdRng) -> String {
    let width = words.max(1).min(text.len());
    let mut span = String::new();
    for _ in 0..100 {
        let start = rng.random_range(0..=text.len() - width);
        span = text[start..start + width].join(" ");
        if !target || good_target(&span) {
            break;
        }
    }
    span
}

/// Pairs from a passage alone (SEAL's indexing pairs, see the module documentation).
pub fn unsupervised_pairs(passage: &Passage, config: &PairConfig, rng: &mut StdRng) -> Vec<TrainingPair> {
    let mut pairs = Vec::new();
    let text = words(&passage.text);
    let title = passage.title.trim();
    let mut push = |source: &str, target: String, view: View, rng: &mut StdRng| {
        let source =
            if rng.random::<f64>() < config.lowercase_sources { source.to_lowercase() } else { source.to_string() };
        pairs.push(TrainingPair { source: view.source(&source), target, view });
    };
    if !title.is_empty() && !text.is_empty() {
        for _ in 0..config.passage_title_pairs {
            push(&passage.text, closed(title), View::Title, rng);
        }
        for _ in 0..config.title_span_pairs {
            if rng.random::<bool>() {
                let span = random_span(&text, config.span_words, false, rng);
                push(&span, closed(title), View::Title, rng);
            } else {
                let span = random_span(&text, config.span_words, true, rng);
                push(title, span, View::Body, rng);
            }
        }
    }
    if !text.is_empty() {
        for _ in 0..config.span_pairs {
            let source = random_span(&text, config.span_words, false, rng);
            let target = random_span(&text, config.span_words, true, rng);
            push(&source, target, View::Body, rng);
        }
    }
    if !title.is_empty() {
        for pq in passage.pseudo_queries.iter().take(config.pseudo_queries) {
            push(pq, closed(title), View::Title, rng);
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
