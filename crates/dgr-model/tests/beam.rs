//! Constrained beam search on the tiny BERT2BERT fixture over small token corpora: every key is
//! an n-gram of the corpus, a wide beam finds all of them, keys carry the student's
//! teacher-forced log-probability, and titles are complete and open a passage.

mod common;

use std::collections::BTreeSet;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dgr_index::{CorpusIndex, IndexBuilder};
use dgr_model::beam::{End, KeepKeys, ViewSearch, search_keys, search_keys_batch};
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::seq2seq::{Encoded, EncoderDecoder, Source};

const EOS: u32 = 3;
const MARK: [u32; 2] = [9, 9];

fn build_index(passages: &[Vec<u32>]) -> CorpusIndex {
    let mut builder = IndexBuilder::new(100).unwrap();
    for (i, p) in passages.iter().enumerate() {
        builder.add(&format!("p{i}"), p).unwrap();
    }
    builder.build(2).unwrap()
}

fn encoded(model: &Bert2Bert, device: &Device) -> Encoded {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 40, 41, 42, 43, 3], [1, 6]), device);
    model.encode(&Source { mask: ids.ones_like(), ids })
}

fn body(index: &CorpusIndex, max_tokens: usize) -> ViewSearch {
    ViewSearch { start: index.root(), forced: Vec::new(), max_tokens, end: End::Never, keys: KeepKeys::EveryPrefix }
}

fn ngrams(passages: &[Vec<u32>], max: usize) -> BTreeSet<Vec<u32>> {
    let mut all = BTreeSet::new();
    for p in passages {
        for n in 1..=max {
            all.extend(p.windows(n).map(<[u32]>::to_vec));
        }
    }
    all
}

/// Each key's score equals the teacher-forced log-probability of its tokens, one key a row or
/// packed (as stage 2 scores keys).
fn assert_scores_are_teacher_forced(model: &Bert2Bert, encoded: &Encoded, keys: &[(Vec<u32>, f32)]) {
    let tokens: Vec<Vec<u32>> = keys.iter().map(|k| k.0.clone()).collect();
    let forced = values(model.score_keys(encoded, &tokens));
    let packed = values(model.score_keys_packed(encoded, &tokens));
    for (((key, score), expected), packed) in keys.iter().zip(forced).zip(packed) {
        assert!((score - expected).abs() <= 1e-4, "{key:?}: beam {score} vs teacher-forced {expected}");
        assert!((score - packed).abs() <= 1e-4, "{key:?}: beam {score} vs packed {packed}");
    }
}

#[test]
fn a_wide_beam_finds_every_ngram_of_the_corpus_and_nothing_else() {
    let device = Device::flex();
    let (dir, _) = model_fixture("tiny-bert2bert");
    let (model, _, _) = Bert2Bert::load(&dir, &device).unwrap();
    let passages = vec![vec![11, 12, 13, 14, 12, 13], vec![12, 13, 15], vec![16, 11, 12], vec![]];
    let index = build_index(&passages);
    let encoded = encoded(&model, &device);

    let search = search_keys(&model, &index, &encoded, &body(&index, 3), 1000, EOS).unwrap();
    let found: BTreeSet<Vec<u32>> = search.keys.iter().map(|k| k.tokens.clone()).collect();
    assert_eq!(found.len(), search.keys.len(), "no key twice");
    assert_eq!(found, ngrams(&passages, 3));
    for key in &search.keys {
        assert_eq!(key.count, index.count(&key.tokens), "{:?}", key.tokens);
    }
    let scored: Vec<(Vec<u32>, f32)> = search.keys.iter().map(|k| (k.tokens.clone(), k.log_prob)).collect();
    assert_scores_are_teacher_forced(&model, &encoded, &scored);
    assert!(search.keys.windows(2).all(|w| w[0].log_prob >= w[1].log_prob), "best first");
}

#[test]
fn a_narrow_beam_keeps_the_best_continuations() {
    let device = Device::flex();
    let (dir, _) = model_fixture("tiny-bert2bert");
    let (model, _, _) = Bert2Bert::load(&dir, &device).unwrap();
    let passages: Vec<Vec<u32>> = vec![(10..40).collect(), (25..60).rev().collect()];
    let index = build_index(&passages);
    let encoded = encoded(&model, &device);

    let search = search_keys(&model, &index, &encoded, &body(&index, 4), 3, EOS).unwrap();
    for length in 1..=4 {
        assert_eq!(search.keys.iter().filter(|k| k.tokens.len() == length).count(), 3, "length {length}");
    }
    // The first step keeps the 3 most likely tokens of the corpus.
    let firsts: Vec<Vec<u32>> = ngrams(&passages, 1).into_iter().collect();
    let scores = values(model.score_keys(&encoded, &firsts));
    let mut ranked: Vec<(f32, u32)> = scores.iter().zip(&firsts).map(|(&s, t)| (s, t[0])).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let best: BTreeSet<u32> = ranked[..3].iter().map(|r| r.1).collect();
    let kept: BTreeSet<u32> = search.keys.iter().filter(|k| k.tokens.len() == 1).map(|k| k.tokens[0]).collect();
    assert_eq!(kept, best);
    let all: BTreeSet<Vec<u32>> = ngrams(&passages, 4);
    assert!(search.keys.iter().all(|k| all.contains(&k.tokens)), "keys are n-grams of the corpus");
}

#[test]
fn titles_are_complete_open_a_passage_and_fit_the_length_limit() {
    let device = Device::flex();
    let (dir, _) = model_fixture("tiny-bert2bert");
    let (model, _, _) = Bert2Bert::load(&dir, &device).unwrap();
    let passages = vec![
        vec![11, 12, 9, 9, 13, 14],
        vec![11, 15, 9, 9, 16],
        vec![12, 9, 9, 17, 11, 12, 9, 9, 20],
        vec![18, 19, 20, 21, 22, 9, 9, 23],
        vec![24, 25],
    ];
    let index = build_index(&passages);
    let encoded = encoded(&model, &device);
    let title = ViewSearch {
        start: index.passage_start(),
        forced: Vec::new(),
        max_tokens: 4,
        end: End::AfterTokens(MARK.to_vec()),
        keys: KeepKeys::Finished,
    };
    let search = search_keys(&model, &index, &encoded, &title, 100, EOS).unwrap();
    let found: BTreeSet<Vec<u32>> = search.keys.iter().map(|k| k.tokens.clone()).collect();
    // p3's title is 7 tokens long with its mark, over the limit of 4; p4 has none.
    let expected: BTreeSet<Vec<u32>> = [vec![11, 12, 9, 9], vec![11, 15, 9, 9], vec![12, 9, 9]].into_iter().collect();
    assert_eq!(found, expected);
    assert_eq!(search.keys.iter().find(|k| k.tokens == [11, 12, 9, 9]).map(|k| k.count), Some(1), "anchored count");
    let scored: Vec<(Vec<u32>, f32)> = search.keys.iter().map(|k| (k.tokens.clone(), k.log_prob)).collect();
    assert_scores_are_teacher_forced(&model, &encoded, &scored);

    // A pseudo-query view: forced behind a marker, closed by the mark.
    let passages = vec![vec![30, 31, 5, 5, 32, 33, 9, 9, 5, 5, 34, 9, 9], vec![5, 5, 35, 36, 37, 38, 9, 9]];
    let index = build_index(&passages);
    let pq = ViewSearch {
        start: index.prefix(&[5, 5]),
        forced: vec![5, 5],
        max_tokens: 4,
        end: End::AfterTokens(MARK.to_vec()),
        keys: KeepKeys::Finished,
    };
    let search = search_keys(&model, &index, &encoded, &pq, 100, EOS).unwrap();
    let found: BTreeSet<Vec<u32>> = search.keys.iter().map(|k| k.tokens.clone()).collect();
    assert_eq!(found, [vec![32, 33, 9, 9], vec![34, 9, 9]].into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn searches_decoded_together_equal_searches_decoded_alone() {
    let device = Device::flex();
    let (dir, _) = model_fixture("tiny-bert2bert");
    let (model, _, _) = Bert2Bert::load(&dir, &device).unwrap();
    let passages = vec![vec![11, 12, 9, 9, 13, 14, 15, 12, 13], vec![12, 9, 9, 17, 11, 12, 13, 16], vec![16, 9, 9, 11]];
    let index = build_index(&passages);
    // Two sources of different lengths: the shorter one is padded in the batch.
    let rows = [vec![2i64, 40, 41, 42, 43, 3], vec![2i64, 50, 51, 3]];
    let encode = |ids: &[Vec<i64>]| {
        let length = ids.iter().map(Vec::len).max().unwrap();
        let mut flat = Vec::new();
        let mut mask = Vec::new();
        for row in ids {
            flat.extend(row.iter().copied().chain(std::iter::repeat_n(0, length - row.len())));
            mask.extend((0..length).map(|i| i64::from(i < row.len())));
        }
        let shape = [ids.len(), length];
        model.encode(&Source {
            ids: Tensor::<2, Int>::from_data(TensorData::new(flat, shape), &device),
            mask: Tensor::<2, Int>::from_data(TensorData::new(mask, shape), &device),
        })
    };
    let title = ViewSearch {
        start: index.passage_start(),
        forced: Vec::new(),
        max_tokens: 6,
        end: End::AfterTokens(MARK.to_vec()),
        keys: KeepKeys::Finished,
    };
    let views = [body(&index, 3), title.clone(), title, body(&index, 2)];
    let sources = [rows[0].clone(), rows[0].clone(), rows[1].clone(), rows[1].clone()];
    let together = search_keys_batch(&model, &index, &encode(&sources), &views, 2, EOS).unwrap();
    for (i, view) in views.iter().enumerate() {
        let alone = search_keys(&model, &index, &encode(&sources[i..=i]), view, 2, EOS).unwrap();
        let tokens = |s: &dgr_model::beam::Search| s.keys.iter().map(|k| k.tokens.clone()).collect::<Vec<_>>();
        assert_eq!(tokens(&together[i]), tokens(&alone), "search {i}");
        assert!(!alone.keys.is_empty(), "search {i} finds keys");
        for (a, b) in together[i].keys.iter().zip(&alone.keys) {
            assert!((a.log_prob - b.log_prob).abs() <= 1e-4, "search {i}: {} vs {}", a.log_prob, b.log_prob);
        }
        let first = max_abs_diff(&together[i].first_log_probs, &alone.first_log_probs);
        assert!(first <= 1e-4 && alone.first_log_probs.len() == 100, "first step of search {i}: {first}");
    }
}
