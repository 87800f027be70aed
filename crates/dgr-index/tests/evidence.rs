//! Key weights and passage scores on cases worked out by hand from the formulas of method §2
//! (the arithmetic is in the comments).

use std::collections::HashSet;

use dgr_index::evidence::{Key, ScoringConfig, Unigram, coverage_factor, key_weight, log_odds, rank_passages};
use dgr_index::{CorpusIndex, IndexBuilder};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn key_weight_is_the_squared_clamped_log_odds() {
    let config = ScoringConfig::default();
    // P(k|q) = 0.5, count 1 of N = 95: P(k) = (1 + 5) / (95 + 5) = 0.06;
    // logit(0.5) - logit(0.06) = 0 - ln(0.06 / 0.94) = 2.751535; squared 7.570947.
    assert!(close(key_weight(0.5f64.ln(), 1, 95, &config), 7.570946577816241));
    // A key the student finds less likely than the corpus does weighs nothing.
    assert!(log_odds(0.01f64.ln(), 1, 95, 5.0) < 0.0);
    assert_eq!(key_weight(0.01f64.ln(), 1, 95, &config), 0.0);
    // A key not in the corpus weighs nothing, however likely.
    assert_eq!(key_weight(0.9f64.ln(), 0, 95, &config), 0.0);
    // A certain key stays finite.
    assert!(key_weight(0.0, 1, 95, &config).is_finite());
}

#[test]
fn coverage_factor_counts_distinct_new_token_ids() {
    let covered: HashSet<u32> = [2].into_iter().collect();
    // {1, 2, 3}: 2 of 3 new, 1 - 0.8 + 0.8 * 2/3.
    assert!(close(coverage_factor(&[1, 2, 2, 3], &covered, 0.8), 1.0 - 0.8 + 0.8 * 2.0 / 3.0));
    assert!(close(coverage_factor(&[2], &covered, 0.8), 0.2));
    assert!(close(coverage_factor(&[4, 5], &covered, 0.8), 1.0));
}

fn corpus() -> CorpusIndex {
    let mut builder = IndexBuilder::new(10).unwrap();
    builder.add("p0", &[1, 2, 3, 4, 3]).unwrap();
    builder.add("p1", &[3, 4, 5]).unwrap();
    builder.add("p2", &[6, 7, 5]).unwrap();
    builder.build(2).unwrap()
}

fn key(tokens: &[u32], p: f64) -> Key {
    Key { tokens: tokens.to_vec(), anchored: false, log_prob: p.ln(), scale: 1.0 }
}

#[test]
fn passages_score_their_keys_greedily_without_overlap_and_unigrams_for_the_rest() {
    // N = 11, s = 5, so P(k) = (count + 5) / 16.
    // A [3 4]: P(k|q) 0.9, count 2, P(k) 7/16: (ln 9 + ln(9/7))^2        = 5.995343
    // C [2 3]: 0.8, count 1, P(k) 6/16:        (ln 4 + ln(10/6))^2       = 3.599064
    // B [1 2]: 0.5, count 1:                   (ln(10/6))^2              = 0.260943
    // E [3]:   0.6, count 3, P(k) 8/16:        (ln 1.5)^2                = 0.164402
    // Unigram 5: 0.7, count 2: ln(7/3) + ln(9/7) = 1.098612, not squared; it is also one of
    // the best unigrams (at most as many as there are keys), so it becomes a key [5].
    // Unigram 3 is left out: [3] is a key of its own. Unigram 6 is less likely than its
    // corpus frequency and scores nothing.
    let keys = vec![key(&[3, 4], 0.9), key(&[2, 3], 0.8), key(&[1, 2], 0.5), key(&[3], 0.6), key(&[8], 0.9)];
    let unigrams = [
        Unigram { token: 5, log_prob: 0.7f64.ln() },
        Unigram { token: 3, log_prob: 0.99f64.ln() },
        Unigram { token: 6, log_prob: 0.1f64.ln() },
    ];
    let ranking = rank_passages(&corpus(), &keys, &unigrams, &ScoringConfig::default(), 10);

    // [8] is not in the corpus and is dropped; [5] joins as a unigram key.
    let weights: Vec<(Vec<u32>, f64)> = ranking.keys.iter().map(|k| (k.tokens.clone(), k.weight)).collect();
    let expected = [
        (vec![3, 4], 5.9953432571314265),
        (vec![2, 3], 3.5990642351562863),
        (vec![1, 2], 0.26094281769158323),
        (vec![3], 0.16440195369043287),
        (vec![5], 1.0986122883347764),
    ];
    assert_eq!(weights.len(), expected.len(), "{weights:?}");
    for ((tokens, weight), (want_tokens, want)) in weights.iter().zip(&expected) {
        assert_eq!(tokens, want_tokens);
        assert!(close(*weight, *want), "{tokens:?}: {weight} vs {want}");
    }

    // p1 [3 4 5]: A at 0, then [5] at 2 (nothing covered twice)     = 5.995343 + 1.098612
    // p0 [1 2 3 4 3]: A at 2; C at 1 overlaps A; B at 0 (all new); E at 4 with its only token
    //     covered, factor 0.2                                        = 5.995343 + 0.260943 + 0.032880
    // p2 [6 7 5]: [5] only                                           = 1.098612
    let ranked: Vec<(u32, f64)> = ranking.passages.iter().map(|p| (p.passage, p.score)).collect();
    assert_eq!(ranked.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 0, 2], "{ranked:?}");
    assert!(close(ranked[0].1, 7.093955545466203));
    assert!(close(ranked[1].1, 6.289166465561096));
    assert!(close(ranked[2].1, 1.0986122883347764));
    let p0 = &ranking.passages[1];
    let matched: Vec<usize> = p0.keys.iter().map(|m| m.key).collect();
    assert_eq!(matched, vec![0, 2, 3], "A, B, E count in p0; C overlaps A");
    assert!(close(p0.keys[2].score, 0.2 * 0.16440195369043287));
    assert_eq!(p0.unigram_score, 0.0);

    // Unigrams alone propose nothing: with no keys, no unigram becomes a key.
    let ranking = rank_passages(&corpus(), &[], &unigrams, &ScoringConfig::default(), 10);
    assert!(ranking.keys.is_empty() && ranking.passages.is_empty());
}

#[test]
fn titles_match_only_at_the_start_of_a_passage_and_hits_are_bounded() {
    let index = corpus();
    // [3 4] opens p1 only; unanchored it also occurs in p0.
    let title = Key { tokens: vec![3, 4], anchored: true, log_prob: 0.9f64.ln(), scale: 1.0 };
    let ranking = rank_passages(&index, &[title], &[], &ScoringConfig::default(), 10);
    assert_eq!(ranking.keys[0].count, 1);
    assert_eq!(ranking.passages.iter().map(|p| p.passage).collect::<Vec<_>>(), vec![1]);

    let ranking = rank_passages(&index, &[key(&[3, 4], 0.9), key(&[5], 0.9)], &[], &ScoringConfig::default(), 1);
    assert_eq!(ranking.passages.len(), 1);
    // Keys above max_hits propose nothing.
    let config = ScoringConfig { max_hits: 1, ..ScoringConfig::default() };
    let ranking = rank_passages(&index, &[key(&[3, 4], 0.9)], &[], &config, 10);
    assert!(ranking.passages.is_empty());
}

#[test]
fn source_weights_scale_key_weights_and_unigram_scores() {
    // The keys of the first test, with B [1 2] from a source weighted 40: its weight becomes
    // 40 × 0.260943 = 10.437713, so p0 (10.437713 + 5.995343 + 0.032880) now ranks above p1.
    let mut boosted = key(&[1, 2], 0.5);
    boosted.scale = 40.0;
    let keys = vec![key(&[3, 4], 0.9), boosted, key(&[3], 0.6)];
    let unigrams = [Unigram { token: 5, log_prob: 0.7f64.ln() }];
    let ranking = rank_passages(&corpus(), &keys, &unigrams, &ScoringConfig::default(), 10);
    assert!(close(ranking.keys[1].weight, 40.0 * 0.26094281769158323));
    let ranked: Vec<(u32, f64)> = ranking.passages.iter().map(|p| (p.passage, p.score)).collect();
    assert_eq!(ranked.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2], "{ranked:?}");
    assert!(close(ranked[0].1, 40.0 * 0.26094281769158323 + 5.9953432571314265 + 0.2 * 0.16440195369043287));

    // The unigram weight scales unigram keys; at 0 the unigram [5] is gone and p2, which only
    // it proposed, with it.
    let mut config = ScoringConfig::default();
    config.source_weights.unigram = 3.0;
    let ranking = rank_passages(&corpus(), &keys, &unigrams, &config, 10);
    let unigram_key = ranking.keys.iter().find(|k| k.tokens == [5]).expect("the unigram key");
    assert!(close(unigram_key.weight, 3.0 * 1.0986122883347764));
    config.source_weights.unigram = 0.0;
    let ranking = rank_passages(&corpus(), &keys, &unigrams, &config, 10);
    assert!(ranking.keys.iter().all(|k| k.tokens != [5]));
    assert_eq!(ranking.passages.iter().map(|p| p.passage).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn source_weights_name_the_candidate_shards_sources_and_refuse_negative_factors() {
    use dgr_index::evidence::KeySource;
    let weights = dgr_index::evidence::SourceWeights { query_span: 16.0, pseudo_query: 2.0, ..Default::default() };
    let parsed = |name: &str| KeySource::parse(name).map(|source| weights.of(source));
    assert_eq!(parsed("query-span"), Some(16.0));
    assert_eq!(parsed("pseudo-query"), Some(2.0));
    assert_eq!(parsed("title"), Some(1.0));
    assert_eq!(parsed("query_span"), None, "the TOML key is not a stored source name");
    for source in KeySource::ALL {
        assert_eq!(KeySource::parse(source.name()), Some(source));
    }
    assert!(weights.validate().is_ok());
    let bad = dgr_index::evidence::SourceWeights { title: -1.0, ..Default::default() };
    assert!(bad.validate().unwrap_err().contains("source_weights.title"));
}
