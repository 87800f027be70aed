//! Metric values against reference implementations on real data (fixtures made by
//! scripts/fixtures/make_eval_fixtures.py): ranx on a robust04 run, DPR's has_answer on
//! Wikipedia passages.

use std::path::{Path, PathBuf};

use dgr_core::trec::{Qrels, Run, ScoredDoc, read_qrels, read_run};
use dgr_eval::{evaluate_answers, evaluate_qrels, has_answer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}

#[test]
fn qrels_metrics_equal_ranx_on_a_real_robust04_run() {
    let run = read_run(&fixtures().join("robust04-rm3.run")).unwrap();
    let qrels = read_qrels(&fixtures().join("robust04.qrels")).unwrap();
    let report = evaluate_qrels(&run, &qrels, &[5, 20, 100]);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("robust04-ranx.json")).unwrap()).unwrap();
    assert_eq!(report.queries as u64, reference["queries"].as_u64().unwrap());
    let expected = reference["metrics"].as_object().unwrap();
    assert_eq!(report.metrics.len(), expected.len());
    for (name, value) in expected {
        let ours = report.metrics[name];
        let theirs = value.as_f64().unwrap();
        assert!((ours - theirs).abs() <= 1e-6, "{name}: dgr {ours} vs ranx {theirs}");
    }
}

#[test]
fn answer_matching_equals_dpr_has_answer_on_real_passages() {
    let text = std::fs::read_to_string(fixtures().join("answer-cases.jsonl")).unwrap();
    let mut checked = (0, 0);
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let passage = case["text"].as_str().unwrap();
        for c in case["cases"].as_array().unwrap() {
            let answers: Vec<String> =
                c["answers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
            let expected = c["has_answer"].as_bool().unwrap();
            assert_eq!(has_answer(&answers, passage), expected, "answers {answers:?} in {passage:?}");
            checked.0 += 1;
            checked.1 += usize::from(expected);
        }
    }
    assert!(checked.0 >= 200 && checked.1 >= 50 && checked.1 < checked.0, "{checked:?}");
}

fn ranking(docs: &[(&str, f64)]) -> Vec<ScoredDoc> {
    docs.iter().map(|(d, s)| ScoredDoc { doc_id: d.to_string(), score: *s }).collect()
}

#[test]
fn hand_computed_graded_case() {
    // q1: judged a=2, b=0, c=1, d=3 (d never retrieved); ranking a, b, c, x.
    let mut qrels = Qrels::default();
    for (d, r) in [("a", 2), ("b", 0), ("c", 1), ("d", 3)] {
        qrels.insert("q1", d, r);
    }
    qrels.insert("q2", "z", 1); // judged but absent from the run: scores 0
    qrels.insert("q3", "n", 0); // no relevant document: not averaged
    let mut run = Run::default();
    run.rankings.insert("q1".into(), ranking(&[("a", 4.0), ("b", 3.0), ("c", 2.0), ("x", 1.0)]));
    run.rankings.insert("q9".into(), ranking(&[("a", 1.0)])); // unjudged query: ignored

    let report = evaluate_qrels(&run, &qrels, &[1, 3]);
    assert_eq!(report.queries, 2);
    let dcg = 2.0 + 1.0 / 4f64.log2();
    let idcg = 3.0 + 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
    let close = |name: &str, value: f64| assert!((report.metrics[name] - value).abs() < 1e-12, "{name}: {report:?}");
    close("ndcg@10", (dcg / idcg) / 2.0);
    close("mrr@10", 1.0 / 2.0);
    close("recall@1", (1.0 / 3.0) / 2.0);
    close("recall@3", (2.0 / 3.0) / 2.0);
}

#[test]
fn answer_hits_count_the_first_passage_with_an_answer() {
    let texts = std::collections::HashMap::from([
        ("p1", "Paris is the capital of France."),
        ("p2", "The Eiffel Tower was completed in 1889."),
    ]);
    let answers = std::collections::HashMap::from([
        ("q1".to_string(), vec!["1889".to_string()]),
        ("q2".to_string(), vec!["Lyon".to_string()]),
        ("q3".to_string(), vec![]), // no answers: not averaged
    ]);
    let mut run = Run::default();
    run.rankings.insert("q1".into(), ranking(&[("p1", 2.0), ("p2", 1.0)]));
    run.rankings.insert("q2".into(), ranking(&[("p1", 2.0), ("p2", 1.0)]));
    let report = evaluate_answers(&run, &answers, |id| texts.get(id).copied(), &[1, 2]);
    assert_eq!(report.queries, 2);
    assert_eq!(report.metrics["answer_hit@1"], 0.0);
    assert_eq!(report.metrics["answer_hit@2"], 0.5);
}
