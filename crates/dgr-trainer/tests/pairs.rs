//! Stage-1 pairs on the real wiki-vital fixture subset.

use std::path::Path;

use dgr_core::arrow_file::read_records;
use dgr_core::import::{DatasetFormat, ImportOptions, import};
use dgr_core::progress::NoProgress;
use dgr_core::trec::read_qrels;
use dgr_core::{Passage, Query};
use dgr_trainer::pair_space::{CorpusScan, PairSpace};
use dgr_trainer::pairs::{PairConfig, TrainingPair, View, supervised_pairs, unsupervised_pairs};
use rand::SeedableRng;

struct Data {
    corpus: Vec<Passage>,
    queries: Vec<Query>,
    relevant: std::collections::BTreeMap<String, Vec<String>>,
}

fn wiki_train() -> Data {
    let tmp = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wiki-vital/summaries_subset.json");
    let data = tmp.path().join("data");
    import(DatasetFormat::WikiVital, &input, &data, &ImportOptions::default(), &NoProgress).unwrap();
    let qrels = read_qrels(&data.join("qrels-train.tsv")).unwrap();
    let relevant = qrels
        .judgments
        .iter()
        .map(|(q, docs)| (q.clone(), docs.iter().filter(|(_, r)| **r > 0).map(|(d, _)| d.clone()).collect()))
        .collect();
    Data {
        corpus: read_records(&data.join("corpus.arrow")).unwrap(),
        queries: read_records(&data.join("queries-train.arrow")).unwrap(),
        relevant,
    }
}

fn space_of(data: &Data, config: &PairConfig) -> PairSpace {
    let judged: Vec<(String, Vec<String>)> =
        data.queries.iter().map(|q| (q.text.clone(), data.relevant[&q.id].clone())).collect();
    let wanted = judged.iter().flat_map(|(_, ids)| ids.iter().map(String::as_str)).collect();
    let (space, unknown) = PairSpace::new(config.clone(), judged.clone(), CorpusScan::of(&data.corpus, &wanted));
    assert!(unknown.is_empty());
    space
}

/// Every pair of the space, in order.
fn pairs(data: &Data, config: &PairConfig) -> Vec<TrainingPair> {
    let space = space_of(data, config);
    let mut corpus = data.corpus.clone();
    (0..space.pairs()).map(|i| space.pair(i, &mut corpus).unwrap()).collect()
}

#[test]
fn every_positive_gets_its_views_and_every_passage_its_unsupervised_pairs() {
    let data = wiki_train();
    let config = PairConfig::default();
    let all = pairs(&data, &config);
    // 31 train queries x (3 titles + 10 spans), no pseudo-queries in wiki-vital; plus SEAL's
    // 1 + 3 + 10 indexing pairs for each of the 40 passages.
    assert_eq!(data.queries.len(), 31);
    assert_eq!(all.len(), 31 * 13 + 40 * 14);
    let count = |view| all.iter().filter(|p| p.view == view).count();
    assert!(count(View::Title) > 31 * 3 + 40, "passage -> title and some span -> title pairs");
    assert!(count(View::Body) > 31 * 10 + 40 * 10, "span -> span and some title -> span pairs");
    assert_eq!(count(View::Title) + count(View::Body), all.len());
    assert_eq!(count(View::PseudoQuery), 0);
    // Every passage's title is a target, also of the 9 passages no train query points at.
    let targets: std::collections::HashSet<&str> = all.iter().map(|p| p.target.as_str()).collect();
    let judged: std::collections::HashSet<&String> = data.relevant.values().flatten().collect();
    assert_eq!(data.corpus.iter().filter(|p| !judged.contains(&p.id)).count(), 9);
    for passage in &data.corpus {
        assert!(targets.contains(format!("{} @@", passage.title).as_str()), "{} is never a target", passage.title);
    }

    for pair in &all {
        assert!(pair.source.ends_with(pair.view.prompt()), "{pair:?}");
        match pair.view {
            View::Title => {
                let title = pair.target.strip_suffix(" @@").expect("title targets end with @@");
                assert!(data.corpus.iter().any(|p| p.title == title), "{pair:?}");
            }
            View::Body => {
                assert_eq!(pair.target.split_whitespace().count(), 10, "{pair:?}");
                assert!(
                    data.corpus.iter().any(|p| p
                        .text
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .contains(&pair.target))
                );
            }
            View::PseudoQuery => unreachable!(),
        }
    }
    assert_eq!(all, pairs(&data, &config), "the same seed gives the same pairs");
    assert_ne!(all, pairs(&data, &PairConfig { seed: 7, ..config.clone() }), "another seed other spans");
    // Each pair is drawn alone: reading them backwards gives the same pairs.
    let space = space_of(&data, &config);
    let mut corpus = data.corpus.clone();
    let backwards: Vec<TrainingPair> = (0..space.pairs()).rev().map(|i| space.pair(i, &mut corpus).unwrap()).collect();
    assert!(backwards.into_iter().rev().eq(all.iter().cloned()), "a pair depends on its number alone");

    // The numbering is the units' slots in turn: each (query, positive) then each passage, with
    // the pairs that drawing a unit's pairs in one go gives.
    let space = space_of(&data, &config);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut expected = Vec::new();
    for query in &data.queries {
        for id in &data.relevant[&query.id] {
            let passage = data.corpus.iter().find(|p| &p.id == id).unwrap();
            expected.extend(
                supervised_pairs(&query.text, passage, &config, &mut rng).into_iter().map(|p| (p.view, p.source)),
            );
        }
    }
    for passage in &data.corpus {
        expected.extend(unsupervised_pairs(passage, &config, &mut rng).into_iter().map(|p| (p.view, p.source)));
    }
    let mut corpus = data.corpus.clone();
    // Views and sources (for the views whose source is not drawn) follow from the slot alone.
    let numbered: Vec<(View, String)> =
        (0..space.pairs()).map(|i| space.pair(i, &mut corpus).unwrap()).map(|p| (p.view, p.source)).collect();
    assert_eq!(numbered.len(), expected.len());
    let judged_pairs = 31 * 13;
    for (i, (a, b)) in numbered.iter().zip(&expected).enumerate() {
        if i < judged_pairs {
            assert_eq!(a, b, "pair {i}: its view, the query as source");
            continue;
        }
        match (i - judged_pairs) % 14 {
            0 => assert_eq!((a.0, a.1.to_lowercase()), (b.0, b.1.to_lowercase()), "pair {i}: the whole text -> title"),
            1..=3 => {} // at random span -> title or title -> span
            _ => assert_eq!((a.0, b.0), (View::Body, View::Body), "pair {i}: span -> span"),
        }
    }
    assert!(space.pair(space.pairs(), &mut corpus).is_err(), "no pair past the end");
}

#[test]
fn indexing_pairs_follow_seal() {
    let data = wiki_train();
    let config = PairConfig { lowercase_sources: 0.0, ..PairConfig::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut starts_with_stop_word = 0;
    let mut body_targets = 0;
    for passage in &data.corpus {
        let pairs = unsupervised_pairs(passage, &config, &mut rng);
        assert_eq!(pairs.len(), 14);
        assert_eq!(pairs[0].source, format!("{} || title || +", passage.text), "the whole passage asks for its title");
        assert_eq!(pairs[0].target, format!("{} @@", passage.title));
        let text = passage.text.split_whitespace().collect::<Vec<_>>().join(" ");
        for pair in pairs.iter().filter(|p| p.view == View::Body) {
            assert!(text.contains(&pair.target) && pair.target.split_whitespace().count() == 10, "{pair:?}");
            assert!(!pair.target.ends_with(['.', '?', '!']) && !pair.target.starts_with(['(', '[']), "{pair:?}");
            body_targets += 1;
            let first = pair.target.split_whitespace().next().unwrap().to_lowercase();
            starts_with_stop_word += usize::from(["the", "a", "of", "and", "in", "is", "to"].contains(&first.as_str()));
        }
        for pair in pairs.iter().filter(|p| p.view == View::Title).skip(1) {
            let span = pair.source.strip_suffix(" || title || +").unwrap();
            assert!(text.contains(span) && span.split_whitespace().count() == 10, "span -> title: {pair:?}");
        }
    }
    // Uniform 10-word windows of these passages start with one of those words far more often.
    assert!(
        body_targets >= 40 * 10 && starts_with_stop_word * 100 < body_targets,
        "{starts_with_stop_word} of {body_targets}"
    );

    let lower = PairConfig { lowercase_sources: 1.0, ..config };
    let pairs = unsupervised_pairs(&data.corpus[0], &lower, &mut rng);
    assert!(pairs.iter().all(|p| p.source == p.source.to_lowercase()), "{pairs:?}");
    assert!(pairs.iter().any(|p| p.target.chars().any(char::is_uppercase)), "targets keep their case");
}

fn overlap(span: &str, context: &str) -> usize {
    let norm = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    let context: std::collections::HashSet<String> = context.split_whitespace().map(norm).collect();
    span.split_whitespace().filter(|w| context.contains(&norm(w))).count()
}

#[test]
fn body_spans_prefer_words_of_the_source() {
    let data = wiki_train();
    let passage = data.corpus.iter().max_by_key(|p| p.text.split_whitespace().count()).unwrap();
    let query = &passage.title;
    let config = PairConfig { spans: 400, titles: 0, ..PairConfig::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let sampled = supervised_pairs(query, passage, &config, &mut rng);
    let sampled_mean = sampled.iter().map(|p| overlap(&p.target, query)).sum::<usize>() as f64 / sampled.len() as f64;
    let words: Vec<&str> = passage.text.split_whitespace().collect();
    let windows: Vec<String> = words.windows(10).map(|w| w.join(" ")).collect();
    let uniform_mean = windows.iter().map(|w| overlap(w, query)).sum::<usize>() as f64 / windows.len() as f64;
    assert!(
        sampled_mean > uniform_mean * 1.5 && sampled_mean > 0.0,
        "sampled {sampled_mean} vs uniform {uniform_mean}"
    );

    let uniform = PairConfig { overlap_bonus: 0.0, ..config };
    let flat = supervised_pairs(query, passage, &uniform, &mut rng);
    let flat_mean = flat.iter().map(|p| overlap(&p.target, query)).sum::<usize>() as f64 / flat.len() as f64;
    assert!(flat_mean < sampled_mean, "no bonus, no preference: {flat_mean} vs {sampled_mean}");
}

#[test]
fn pseudo_queries_give_their_own_views() {
    let passage = Passage {
        id: "p1".into(),
        title: "Lighthouse".into(),
        text: "A lighthouse is a tower designed to emit light to serve as a beacon for ships".into(),
        pseudo_queries: vec!["what is a lighthouse".into(), "tower that guides ships".into()],
    };
    let config = PairConfig::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let supervised = supervised_pairs("beacon tower for ships", &passage, &config, &mut rng);
    let pq: Vec<_> = supervised.iter().filter(|p| p.view == View::PseudoQuery).collect();
    assert_eq!(pq.len(), 5);
    assert!(pq.iter().all(|p| passage.pseudo_queries.iter().any(|q| p.target == format!("{q} @@"))));
    assert!(pq.iter().all(|p| p.source == "beacon tower for ships || query || +"));

    let unsupervised = unsupervised_pairs(&passage, &config, &mut rng);
    let to_title: Vec<_> = unsupervised.iter().filter(|p| p.view == View::Title).collect();
    assert!(to_title.iter().all(|p| p.target == "Lighthouse @@"));
    let from_pq: Vec<_> = to_title
        .iter()
        .filter(|p| p.source.ends_with("lighthouse || title || +") || p.source.ends_with("ships || title || +"))
        .collect();
    let sources: Vec<&str> = from_pq.iter().map(|p| p.source.as_str()).collect();
    assert!(sources.contains(&"what is a lighthouse || title || +"), "{sources:?}");
    assert!(sources.contains(&"tower that guides ships || title || +"), "{sources:?}");

    let corpus = std::slice::from_ref(&passage);
    let judged = vec![("x".to_string(), vec!["nope".to_string(), "p1".to_string()])];
    let (space, unknown) = PairSpace::new(config.clone(), judged, CorpusScan::of(corpus, &["p1", "nope"].into()));
    assert_eq!(unknown, vec!["nope".to_string()]);
    // p1 under the query: 3 titles, 10 spans, 5 pseudo-queries; alone: 1 + 3 + 10 + its 2.
    assert_eq!(space.pairs(), 18 + 16);
}
