//! The index over a corpus: passages as token-id sequences, one after another with a separator
//! before each, queried in token ids (the student's vocabulary).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::IndexError;
use crate::fm::{FmIndex, SEPARATOR};

/// Collects passages, then builds the [`CorpusIndex`].
pub struct IndexBuilder {
    vocab_size: u32,
    text: Vec<u16>,
    passage_starts: Vec<u64>,
    passage_ids: Vec<String>,
}

impl IndexBuilder {
    /// Token ids must be below `vocab_size` (at most 65,534: ids are stored as `id + 1`).
    pub fn new(vocab_size: u32) -> Result<Self, IndexError> {
        if vocab_size == 0 || vocab_size > u32::from(u16::MAX) - 1 {
            return Err(IndexError::Vocabulary(vocab_size));
        }
        Ok(IndexBuilder { vocab_size, text: vec![SEPARATOR], passage_starts: Vec::new(), passage_ids: Vec::new() })
    }

    /// Appends one passage (already laid out and tokenised, without special tokens).
    pub fn add(&mut self, id: &str, tokens: &[u32]) -> Result<(), IndexError> {
        if let Some(&token) = tokens.iter().find(|&&t| t >= self.vocab_size) {
            return Err(IndexError::Token { passage: id.to_string(), token, vocab_size: self.vocab_size });
        }
        self.passage_starts.push(self.text.len() as u64);
        self.passage_ids.push(id.to_string());
        self.text.extend(tokens.iter().map(|&t| symbol(t)));
        self.text.push(SEPARATOR);
        Ok(())
    }

    /// Builds the index; one text position in `sample_rate` is stored for locate.
    pub fn build(self, sample_rate: u64) -> Result<CorpusIndex, IndexError> {
        if self.passage_ids.is_empty() {
            return Err(IndexError::Empty);
        }
        let tokens = (self.text.len() - 1 - self.passage_ids.len()) as u64;
        let fm = FmIndex::build(&self.text, self.vocab_size as usize + 1, sample_rate)?;
        Ok(CorpusIndex {
            fm,
            text: self.text,
            passage_starts: self.passage_starts,
            passage_ids: self.passage_ids,
            tokens,
            vocab_size: self.vocab_size,
        })
    }
}

fn symbol(token: u32) -> u16 {
    (token + 1) as u16
}

/// Where a token sequence occurs: the passage (index into the corpus order) and the token
/// offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub passage: u32,
    pub offset: u32,
}

/// A token prefix being extended one token at a time (a beam's state in constrained decoding):
/// its block of index rows, its length in tokens, and whether it must start a passage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    rows: Range<u64>,
    length: usize,
    /// Matched behind a separator: only occurrences at the start of a passage count.
    anchored: bool,
}

impl Prefix {
    /// Occurrences of the prefix in the corpus.
    pub fn count(&self) -> u64 {
        self.rows.end - self.rows.start
    }

    pub fn len(&self) -> usize {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Whether only occurrences at the start of a passage are counted.
    pub fn is_anchored(&self) -> bool {
        self.anchored
    }
}

/// FM-index over a corpus (see the crate doc).
#[derive(Serialize, Deserialize)]
pub struct CorpusIndex {
    fm: FmIndex,
    /// The indexed text in symbols, kept to read passages back when scoring candidates
    /// (2 bytes per token, cheaper than extracting them from the FM-index).
    text: Vec<u16>,
    /// Text position of each passage's first token.
    passage_starts: Vec<u64>,
    passage_ids: Vec<String>,
    tokens: u64,
    vocab_size: u32,
}

impl CorpusIndex {
    /// The empty prefix: every position of the corpus.
    pub fn root(&self) -> Prefix {
        Prefix { rows: self.fm.full_range(), length: 0, anchored: false }
    }

    /// The empty prefix at the start of every passage: its extensions match passage openings
    /// only (the title view, since a passage's text starts with its title).
    pub fn passage_start(&self) -> Prefix {
        Prefix { rows: self.fm.extend(self.fm.full_range(), SEPARATOR), length: 0, anchored: true }
    }

    /// `prefix` followed by `token`; its count is 0 when that sequence is not in the corpus.
    pub fn extend(&self, prefix: &Prefix, token: u32) -> Prefix {
        let rows = if token < self.vocab_size { self.fm.extend(prefix.rows.clone(), symbol(token)) } else { 0..0 };
        Prefix { rows, length: prefix.length + 1, anchored: prefix.anchored }
    }

    /// The prefix state of `tokens` (count 0 when they are not in the corpus).
    pub fn prefix(&self, tokens: &[u32]) -> Prefix {
        tokens.iter().fold(self.root(), |prefix, &t| self.extend(&prefix, t))
    }

    /// Occurrences of `tokens` in the corpus (within passages; never across two).
    pub fn count(&self, tokens: &[u32]) -> u64 {
        if tokens.is_empty() {
            return self.tokens;
        }
        self.prefix(tokens).count()
    }

    /// The tokens that follow `prefix` somewhere in the corpus, with their counts, in token id
    /// order: the tokens constrained decoding may produce next. The end of a passage is not a
    /// token and is not listed.
    pub fn next_tokens(&self, prefix: &Prefix) -> Vec<(u32, u64)> {
        self.fm
            .next_symbols(prefix.rows.clone())
            .into_iter()
            .filter(|&(s, _)| s != SEPARATOR)
            .map(|(s, count)| (u32::from(s) - 1, count))
            .collect()
    }

    /// Up to `limit` occurrences of `tokens`, sorted by passage and offset.
    pub fn locate(&self, tokens: &[u32], limit: usize) -> Vec<Occurrence> {
        if tokens.is_empty() {
            return Vec::new();
        }
        self.locate_prefix(&self.prefix(tokens), limit)
    }

    /// Up to `limit` occurrences of `prefix` (an anchored one at offset 0 of its passages),
    /// sorted by passage and offset. The empty prefix has none.
    pub fn locate_prefix(&self, prefix: &Prefix, limit: usize) -> Vec<Occurrence> {
        if prefix.is_empty() {
            return Vec::new();
        }
        let anchor = u64::from(prefix.anchored);
        let mut found: Vec<Occurrence> = self
            .fm
            .locate(prefix.rows.clone(), prefix.length + anchor as usize, limit)
            .into_iter()
            .map(|position| {
                let position = position + anchor;
                let passage = self.passage_starts.partition_point(|&start| start <= position) - 1;
                Occurrence { passage: passage as u32, offset: (position - self.passage_starts[passage]) as u32 }
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// The tokens of the passage at `index` (corpus order); empty for an unknown index.
    pub fn passage_tokens(&self, index: u32) -> Vec<u32> {
        let Some(&start) = self.passage_starts.get(index as usize) else {
            return Vec::new();
        };
        let start = start as usize;
        let end = self.text[start..].iter().position(|&s| s == SEPARATOR).map_or(self.text.len(), |e| start + e);
        self.text[start..end].iter().map(|&s| u32::from(s) - 1).collect()
    }

    /// N: tokens in the corpus, separators not counted.
    pub fn total_tokens(&self) -> u64 {
        self.tokens
    }

    pub fn passages(&self) -> usize {
        self.passage_ids.len()
    }

    /// The corpus id of the passage at `index` (corpus order).
    pub fn passage_id(&self, index: u32) -> Option<&str> {
        self.passage_ids.get(index as usize).map(String::as_str)
    }

    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    pub fn sample_rate(&self) -> u64 {
        self.fm.sample_rate()
    }
}
