//! The index answers exactly what a scan of the corpus answers, and survives a round trip to
//! disk; a damaged index directory is refused.

use std::collections::BTreeMap;

use dgr_index::store::{self, Provenance};
use dgr_index::{CorpusIndex, IndexBuilder, Occurrence};
use proptest::prelude::*;

fn build(passages: &[Vec<u32>], vocab: u32, sample_rate: u64) -> CorpusIndex {
    let mut builder = IndexBuilder::new(vocab).unwrap();
    for (i, tokens) in passages.iter().enumerate() {
        builder.add(&format!("p{i}"), tokens).unwrap();
    }
    builder.build(sample_rate).unwrap()
}

/// Every occurrence of `pattern`, by scanning.
fn scan(passages: &[Vec<u32>], pattern: &[u32]) -> Vec<Occurrence> {
    let mut found = Vec::new();
    for (p, tokens) in passages.iter().enumerate() {
        for offset in 0..tokens.len() {
            if tokens[offset..].starts_with(pattern) {
                found.push(Occurrence { passage: p as u32, offset: offset as u32 });
            }
        }
    }
    found
}

/// The tokens after each occurrence of `pattern` (inside its passage), with counts.
fn scan_next(passages: &[Vec<u32>], pattern: &[u32]) -> Vec<(u32, u64)> {
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for o in scan(passages, pattern) {
        if let Some(&t) = passages[o.passage as usize].get(o.offset as usize + pattern.len()) {
            *next.entry(t).or_default() += 1;
        }
    }
    next.into_iter().collect()
}

/// Small vocabularies make repeats common; the first and last ids are always possible.
fn corpus() -> impl Strategy<Value = (u32, Vec<Vec<u32>>)> {
    (2u32..8).prop_flat_map(|vocab| (Just(vocab), prop::collection::vec(prop::collection::vec(0..vocab, 0..12), 1..8)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn count_locate_and_next_tokens_equal_a_scan(
        (vocab, passages) in corpus(),
        sample_rate in 1u64..6,
        picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1usize..5), 1..6),
        random in prop::collection::vec(prop::collection::vec(0u32..9, 1..4), 1..4),
    ) {
        let index = build(&passages, vocab, sample_rate);
        let total: usize = passages.iter().map(Vec::len).sum();
        prop_assert_eq!(index.total_tokens(), total as u64);
        prop_assert_eq!(index.count(&[]), total as u64);

        // Patterns cut from the corpus (they occur) and random ones (they may not; ids up to 8
        // include ids outside the vocabulary).
        let mut patterns: Vec<Vec<u32>> = random;
        for (p, o, len) in picks {
            let tokens = &passages[p.index(passages.len())];
            if !tokens.is_empty() {
                let start = o.index(tokens.len());
                patterns.push(tokens[start..(start + len).min(tokens.len())].to_vec());
            }
        }
        patterns.push(Vec::new());
        for pattern in &patterns {
            let expected = scan(&passages, pattern);
            if !pattern.is_empty() {
                prop_assert_eq!(index.count(pattern), expected.len() as u64, "count {:?}", pattern);
                prop_assert_eq!(index.locate(pattern, usize::MAX), expected.clone(), "locate {:?}", pattern);
                let bounded = index.locate(pattern, 2);
                prop_assert_eq!(bounded.len(), expected.len().min(2));
                prop_assert!(bounded.iter().all(|o| expected.contains(o)));
            }
            let prefix = index.prefix(pattern);
            prop_assert_eq!(prefix.len(), pattern.len());
            let next = index.next_tokens(&prefix);
            prop_assert_eq!(next, scan_next(&passages, pattern), "next tokens of {:?}", pattern);

            // The same pattern anchored at passage starts: only the occurrences at offset 0 (the
            // scan of the empty pattern lists every offset, so its openings are the passage starts).
            let opening: Vec<Occurrence> = expected.iter().copied().filter(|o| o.offset == 0).collect();
            let anchored = pattern.iter().fold(index.passage_start(), |p, &t| index.extend(&p, t));
            prop_assert!(anchored.is_anchored());
            prop_assert_eq!(anchored.len(), pattern.len());
            if !pattern.is_empty() {
                prop_assert_eq!(anchored.count(), opening.len() as u64, "anchored count {:?}", pattern);
                prop_assert_eq!(index.locate_prefix(&anchored, usize::MAX), opening.clone(), "anchored {:?}", pattern);
            }
            let next_anchored: BTreeMap<u32, u64> = opening.iter().fold(BTreeMap::new(), |mut next, o| {
                if let Some(&t) = passages[o.passage as usize].get(pattern.len()) {
                    *next.entry(t).or_default() += 1;
                }
                next
            });
            let expected_next: Vec<(u32, u64)> = next_anchored.into_iter().collect();
            prop_assert_eq!(index.next_tokens(&anchored), expected_next, "anchored next tokens of {:?}", pattern);
        }
    }

    #[test]
    fn decoding_one_token_at_a_time_only_reaches_sequences_of_the_corpus(
        (vocab, passages) in corpus(),
        choices in prop::collection::vec(any::<prop::sample::Index>(), 1..10),
    ) {
        let index = build(&passages, vocab, 3);
        let mut prefix = index.root();
        let mut generated = Vec::new();
        for choice in choices {
            let allowed = index.next_tokens(&prefix);
            if allowed.is_empty() {
                break;
            }
            let (token, count) = allowed[choice.index(allowed.len())];
            prefix = index.extend(&prefix, token);
            generated.push(token);
            prop_assert_eq!(prefix.count(), count);
            prop_assert_eq!(scan(&passages, &generated).len() as u64, count, "{:?}", generated);
        }
    }
}

#[test]
fn passage_ids_and_bad_tokens() {
    let index = build(&[vec![1, 2, 3], vec![], vec![3, 1, 2]], 4, 2);
    assert_eq!(index.passages(), 3);
    assert_eq!(index.passage_id(2), Some("p2"));
    assert_eq!(index.passage_id(3), None);
    let located: Vec<_> = index.locate(&[1, 2], 10).iter().map(|o| index.passage_id(o.passage).unwrap()).collect();
    assert_eq!(located, ["p0", "p2"]);
    // An id outside the vocabulary occurs nowhere and continues nothing.
    assert_eq!(index.count(&[9]), 0);
    assert!(index.next_tokens(&index.prefix(&[9])).is_empty());

    let mut builder = IndexBuilder::new(4).unwrap();
    let err = builder.add("bad", &[1, 4]).unwrap_err().to_string();
    assert!(err.contains("\"bad\"") && err.contains("token id 4"), "{err}");
    assert!(IndexBuilder::new(4).unwrap().build(1).is_err(), "an empty corpus is an error");
    assert!(IndexBuilder::new(70_000).is_err());
}

#[test]
fn saved_index_opens_equal_and_damage_is_refused() {
    let passages = vec![vec![5, 6, 7, 5, 6], vec![6, 7], vec![7, 7, 7, 5]];
    let index = build(&passages, 8, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let provenance = Provenance { tokenizer_sha256: "t".repeat(64), corpus_sha256: "c".repeat(64) };
    let manifest = store::save(&index, &dir, &provenance).unwrap();
    assert_eq!((manifest.tokens, manifest.passages, manifest.vocab_size), (11, 3, 8));

    let (opened, read) = store::open(&dir).unwrap();
    assert_eq!(read, manifest);
    for pattern in [vec![5, 6], vec![7], vec![7, 7], vec![6, 7, 5]] {
        assert_eq!(opened.count(&pattern), index.count(&pattern));
        assert_eq!(opened.locate(&pattern, 100), index.locate(&pattern, 100));
        assert_eq!(opened.next_tokens(&opened.prefix(&pattern)), index.next_tokens(&index.prefix(&pattern)));
    }

    // A flipped byte is caught by the checksum; a foreign manifest by its format.
    let bin = dir.join(store::INDEX_FILE);
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bin, bytes).unwrap();
    let err = store::open(&dir).err().unwrap().to_string();
    assert!(err.contains("does not match its manifest"), "{err}");
    let manifest_path = dir.join(store::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).unwrap().replace("dgr.fm-index", "something-else");
    std::fs::write(&manifest_path, text).unwrap();
    let err = store::open(&dir).err().unwrap().to_string();
    assert!(err.contains("expected \"dgr.fm-index\""), "{err}");
}

/// Empty passages put separators side by side, where an index that relies on the separators
/// to end the text loses its way (LF stops being a permutation).
#[test]
fn empty_passages_next_to_each_other_are_handled() {
    let passages = vec![vec![], vec![2, 1], vec![], vec![], vec![1, 2, 1], vec![]];
    for sample_rate in 1..6 {
        let index = build(&passages, 3, sample_rate);
        for pattern in [vec![1], vec![2], vec![1, 2], vec![2, 1], vec![1, 2, 1], vec![0]] {
            assert_eq!(index.locate(&pattern, 100), scan(&passages, &pattern), "{pattern:?} at rate {sample_rate}");
            assert_eq!(index.next_tokens(&index.prefix(&pattern)), scan_next(&passages, &pattern));
        }
    }
}
