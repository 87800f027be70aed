//! An FM-index over a `u16` text in which symbol 0 separates documents, answering the three
//! queries constrained decoding needs: the number of occurrences of a pattern, where they are,
//! and which symbols follow it.
//!
//! The index is built over the *reversed* text. The suffixes of the reversed text that start
//! with `reverse(p)` form one block of rows, and the Burrows-Wheeler column of those rows holds
//! the symbol that precedes `reverse(p)` there — the symbol that *follows* `p` in the original
//! text. So extending a pattern to the right is one backward-search step, and the distinct
//! next symbols with their counts are a range listing on the wavelet tree of that column
//! (what SEAL gets from sdsl's `interval_symbols`).
//!
//! Suffix sorting is libsais; the column lives in a `qwt` wavelet tree; positions are found
//! by walking LF from a row to the nearest row whose text position was sampled. Internally
//! every symbol is shifted up by one and the reversed text ends with a unique terminator 0:
//! LF is only a permutation of the rows when the text's last symbol is unique and smallest
//! (the separators repeat, so they cannot play that part).

use std::ops::Range;

use qwt::{AccessBin, AccessUnsigned, BitVectorMut, OccsRangeUnsigned, QWT256, RSNarrow, RankBin, RankUnsigned};
use serde::{Deserialize, Serialize};

use crate::error::IndexError;

/// The document separator symbol.
pub const SEPARATOR: u16 = 0;
/// The internal end of the reversed text.
const TERMINATOR: u16 = 0;

/// FM-index of a text over `u16` symbols (see the module doc).
#[derive(Serialize, Deserialize)]
pub struct FmIndex {
    /// Burrows-Wheeler column of the reversed text.
    bwt: QWT256<u16>,
    /// `starts[c]`: the first row whose suffix begins with symbol `c` (`starts[sigma]` = n).
    starts: Vec<u64>,
    /// Rows whose text position is sampled, and those positions (in row order).
    sampled_rows: RSNarrow,
    samples: Vec<u64>,
    sample_rate: u64,
}

impl FmIndex {
    /// Indexes `text` (symbols `< alphabet`); every text position that is a multiple of
    /// `sample_rate` is stored for [`FmIndex::locate`] (memory against locate speed).
    pub fn build(text: &[u16], alphabet: usize, sample_rate: u64) -> Result<Self, IndexError> {
        if text.is_empty() {
            return Err(IndexError::Empty);
        }
        if alphabet > usize::from(u16::MAX) {
            return Err(IndexError::Build(format!(
                "alphabet of {alphabet} symbols does not fit 16 bits with a terminator"
            )));
        }
        if let Some(&symbol) = text.iter().find(|&&s| usize::from(s) >= alphabet) {
            return Err(IndexError::Symbol { symbol, alphabet });
        }
        // The reversed text, shifted by one, closed by the terminator 0.
        let reversed: Vec<u16> = text.iter().rev().map(|&s| s + 1).chain([TERMINATOR]).collect();
        let n = reversed.len();
        let suffixes = libsais::SuffixArrayConstruction::for_text(&reversed)
            .in_owned_buffer64()
            .single_threaded()
            .run()
            .map_err(|e| IndexError::Build(format!("suffix sorting failed: {e:?}")))?
            .into_vec();

        let mut counts = vec![0u64; alphabet + 2];
        for &symbol in &reversed {
            counts[usize::from(symbol) + 1] += 1;
        }
        for c in 1..counts.len() {
            counts[c] += counts[c - 1];
        }

        let sample_rate = sample_rate.max(1);
        let mut bwt = Vec::with_capacity(n);
        let mut sampled = BitVectorMut::with_capacity(n);
        let mut samples = Vec::new();
        for &position in &suffixes {
            let position = position as usize;
            bwt.push(if position == 0 { reversed[n - 1] } else { reversed[position - 1] });
            let keep = (position as u64).is_multiple_of(sample_rate);
            sampled.push(keep);
            if keep {
                samples.push(position as u64);
            }
        }
        Ok(FmIndex {
            bwt: QWT256::from(bwt),
            starts: counts,
            sampled_rows: RSNarrow::new(sampled.into()),
            samples,
            sample_rate,
        })
    }

    /// Length of the text, separators included.
    pub fn len(&self) -> u64 {
        self.rows_total() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the index: one per text position, plus the terminator's.
    fn rows_total(&self) -> u64 {
        self.bwt.len() as u64
    }

    /// Number of distinct symbol values the index was built for.
    pub fn alphabet(&self) -> usize {
        self.starts.len() - 2
    }

    /// The rows of the empty pattern: all of them.
    pub fn full_range(&self) -> Range<u64> {
        0..self.rows_total()
    }

    /// The rows of `pattern + symbol`, given the rows of `pattern` (empty if it does not occur).
    pub fn extend(&self, rows: Range<u64>, symbol: u16) -> Range<u64> {
        if usize::from(symbol) >= self.alphabet() || rows.is_empty() {
            return 0..0;
        }
        let symbol = symbol + 1;
        let c = usize::from(symbol);
        // Symbols absent from the column have no rank (and no rows).
        let rank = |i: u64| self.bwt.rank(symbol, i as usize).unwrap_or(0) as u64;
        self.starts[c] + rank(rows.start)..self.starts[c] + rank(rows.end)
    }

    /// The symbols that follow the pattern whose rows are `rows`, each with its number of
    /// occurrences, in increasing symbol order (the separator included).
    pub fn next_symbols(&self, rows: Range<u64>) -> Vec<(u16, u64)> {
        if rows.is_empty() {
            return Vec::new();
        }
        if rows == self.full_range() {
            return (1..=self.alphabet())
                .filter(|&c| self.starts[c + 1] > self.starts[c])
                .map(|c| ((c - 1) as u16, self.starts[c + 1] - self.starts[c]))
                .collect();
        }
        let mut symbols: Vec<(u16, u64)> = self
            .bwt
            .occs_range(rows.start as usize..rows.end as usize)
            .map(|occurrences| {
                occurrences
                    .filter(|&(symbol, _)| symbol != TERMINATOR)
                    .map(|(symbol, count)| (symbol - 1, count as u64))
                    .collect()
            })
            .unwrap_or_default();
        symbols.sort_unstable();
        symbols
    }

    /// Start positions in the text of up to `limit` occurrences of the pattern of length
    /// `length` whose rows are `rows` (in row order, i.e. not sorted by position).
    pub fn locate(&self, rows: Range<u64>, length: usize, limit: usize) -> Vec<u64> {
        let n = self.len();
        rows.take(limit)
            .map(|row| {
                // Position in the reversed text where reverse(pattern) starts, mapped back.
                let reversed_start = self.reversed_position(row);
                n - reversed_start - length as u64
            })
            .collect()
    }

    /// Text position (in the reversed text) of the suffix in `row`, by LF steps to a sampled row.
    fn reversed_position(&self, mut row: u64) -> u64 {
        let mut steps = 0;
        loop {
            let i = row as usize;
            if self.sampled_rows.get(i) == Some(true) {
                let sample = self.sampled_rows.rank1(i).unwrap_or(0);
                return (self.samples[sample] + steps) % self.rows_total();
            }
            // LF: the row of the suffix one position to the left in the reversed text.
            let symbol = self.bwt.get(i).unwrap_or(TERMINATOR);
            row = self.starts[usize::from(symbol)] + self.bwt.rank(symbol, i).unwrap_or(0) as u64;
            steps += 1;
            debug_assert!(steps <= self.sample_rate, "LF walk passed a sampled position");
        }
    }

    /// The positions sampled for locate: every this many.
    pub fn sample_rate(&self) -> u64 {
        self.sample_rate
    }
}
