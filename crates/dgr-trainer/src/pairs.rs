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
//! lower-cased.
//!
//! A (query, passage) or a passage alone is a unit of pairs, and each pair has a fixed slot in
//! its unit, so that [`crate::pair_space`] can number all pairs of a run and draw any one of
//! them alone, from the generator of its place in the data order.

use std::collections::HashSet;

use dgr_core::Passage;
use rand::Rng;
use rand::rngs::StdRng;

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

/// What a passage offers pairs of: a title, words, and how many pseudo-queries. A unit's
/// pair count follows from it alone, so a pass over the corpus that keeps two bytes per passage
/// is enough to number every pair of a run ([`crate::pair_space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape(u16);

impl Shape {
    const TITLE: u16 = 1;
    const WORDS: u16 = 2;
    /// Pseudo-query counts above this are stored as this (far more than any count setting).
    const MAX_PSEUDO_QUERIES: usize = (u16::MAX >> 2) as usize;

    pub fn of(passage: &Passage) -> Shape {
        let flags = u16::from(!passage.title.trim().is_empty()) * Shape::TITLE
            | u16::from(passage.text.split_whitespace().next().is_some()) * Shape::WORDS;
        Shape(flags | (passage.pseudo_queries.len().min(Shape::MAX_PSEUDO_QUERIES) as u16) << 2)
    }

    fn title(self) -> bool {
        self.0 & Shape::TITLE != 0
    }

    fn words(self) -> bool {
        self.0 & Shape::WORDS != 0
    }

    fn pseudo_queries(self) -> usize {
        usize::from(self.0 >> 2)
    }
}

/// The kinds of a supervised unit's pairs, in slot order, and how many of each.
fn supervised_counts(shape: Shape, config: &PairConfig) -> [usize; 3] {
    [
        if shape.title() { config.titles } else { 0 },
        if shape.words() { config.spans } else { 0 },
        if shape.pseudo_queries() > 0 { config.pseudo_queries } else { 0 },
    ]
}

/// Pairs of one (query, relevant passage).
pub fn supervised_slots(shape: Shape, config: &PairConfig) -> u64 {
    supervised_counts(shape, config).iter().sum::<usize>() as u64
}

/// Pair `slot` of one (query text, relevant passage) (`slot < supervised_slots`): the title
/// pairs, then the body spans, then the pseudo-query pairs.
pub fn supervised_pair(
    query: &str,
    passage: &Passage,
    slot: u64,
    config: &PairConfig,
    rng: &mut StdRng,
) -> TrainingPair {
    let [titles, spans, _] = supervised_counts(Shape::of(passage), config);
    let slot = slot as usize;
    if slot < titles {
        TrainingPair { source: source(query, View::Title), target: closed(&passage.title), view: View::Title }
    } else if slot < titles + spans {
        let span = sample_spans(&passage.text, query, 1, config, rng).pop().unwrap_or_default();
        TrainingPair { source: source(query, View::Body), target: span, view: View::Body }
    } else {
        let pqs = &passage.pseudo_queries;
        let pq = if pqs.is_empty() { "" } else { &pqs[rng.random_range(0..pqs.len())] };
        TrainingPair { source: source(query, View::PseudoQuery), target: closed(pq), view: View::PseudoQuery }
    }
}

/// All pairs of one (query text, relevant passage), each slot drawn in turn from `rng`.
pub fn supervised_pairs(query: &str, passage: &Passage, config: &PairConfig, rng: &mut StdRng) -> Vec<TrainingPair> {
    (0..supervised_slots(Shape::of(passage), config))
        .map(|slot| supervised_pair(query, passage, slot, config, rng))
        .collect()
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

/// The kinds of a passage's indexing pairs, in slot order, and how many of each: whole text →
/// title, span ↔ title, span → span, pseudo-query → title.
fn indexing_counts(shape: Shape, config: &PairConfig) -> [usize; 4] {
    let both = shape.title() && shape.words();
    [
        if both { config.passage_title_pairs } else { 0 },
        if both { config.title_span_pairs } else { 0 },
        if shape.words() { config.span_pairs } else { 0 },
        if shape.title() { shape.pseudo_queries().min(config.pseudo_queries) } else { 0 },
    ]
}

/// Indexing pairs of one passage.
pub fn indexing_slots(shape: Shape, config: &PairConfig) -> u64 {
    indexing_counts(shape, config).iter().sum::<usize>() as u64
}

/// Indexing pair `slot` of a passage alone (SEAL's indexing pairs, see the module
/// documentation; `slot < indexing_slots`).
pub fn indexing_pair(passage: &Passage, slot: u64, config: &PairConfig, rng: &mut StdRng) -> TrainingPair {
    let text = words(&passage.text);
    let title = passage.title.trim();
    let [whole, title_spans, spans, _] = indexing_counts(Shape::of(passage), config);
    let slot = slot as usize;
    let (source, target, view) = if slot < whole {
        (passage.text.clone(), closed(title), View::Title)
    } else if slot < whole + title_spans {
        if rng.random::<bool>() {
            (random_span(&text, config.span_words, false, rng), closed(title), View::Title)
        } else {
            (title.to_string(), random_span(&text, config.span_words, true, rng), View::Body)
        }
    } else if slot < whole + title_spans + spans {
        let source = random_span(&text, config.span_words, false, rng);
        (source, random_span(&text, config.span_words, true, rng), View::Body)
    } else {
        let pq = passage.pseudo_queries.get(slot - whole - title_spans - spans).map(String::as_str).unwrap_or_default();
        (pq.to_string(), closed(title), View::Title)
    };
    let source = if rng.random::<f64>() < config.lowercase_sources { source.to_lowercase() } else { source };
    TrainingPair { source: view.source(&source), target, view }
}

/// All indexing pairs of a passage, each slot drawn in turn from `rng`.
pub fn unsupervised_pairs(passage: &Passage, config: &PairConfig, rng: &mut StdRng) -> Vec<TrainingPair> {
    (0..indexing_slots(Shape::of(passage), config)).map(|slot| indexing_pair(passage, slot, config, rng)).collect()
}
