//! TREC qrels and runs: real files parse, malformed lines are located, runs sort like trec_eval.

use std::path::{Path, PathBuf};

use dgr_core::trec::{read_qrels, read_run, write_qrels, write_run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn real_qrels_files_parse() {
    // ANTIQUE (as capreolus ships it): graded 0-3, tab-separated, with `U0`/`Q0` in the iteration column.
    let antique = read_qrels(&fixtures().join("trec/qrels.antique.txt")).unwrap();
    assert_eq!(antique.len(), 300);
    assert_eq!(antique.judgments["2531329"]["2531329_0"], 3);
    let levels: std::collections::BTreeSet<i32> =
        antique.judgments.values().flat_map(|d| d.values().copied()).collect();
    assert_eq!(levels, [0, 1, 2, 3].into());

    let marco = read_qrels(&fixtures().join("trec/qrels.msmarcopassage.txt")).unwrap();
    assert_eq!(marco.len(), 300);
    assert_eq!(marco.judgments["1185869"]["0"], 1);

    let robust = read_qrels(&fixtures().join("eval/robust04.qrels")).unwrap();
    assert_eq!(robust.judgments.len(), 50);
}

#[test]
fn qrels_and_runs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = read_run(&fixtures().join("eval/robust04-rm3.run")).unwrap();
    assert_eq!(run.rankings.len(), 50);
    assert!(run.rankings.values().all(|docs| docs.len() == 100));
    write_run(&dir.path().join("run.trec"), &run, "copy").unwrap();
    assert_eq!(read_run(&dir.path().join("run.trec")).unwrap(), run);

    let qrels = read_qrels(&fixtures().join("eval/robust04.qrels")).unwrap();
    write_qrels(&dir.path().join("qrels.tsv"), &qrels).unwrap();
    assert_eq!(read_qrels(&dir.path().join("qrels.tsv")).unwrap(), qrels);
}

#[test]
fn runs_are_ordered_by_score_then_doc_id_descending_ignoring_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.trec");
    std::fs::write(&path, "q1 Q0 a 1 1.0 t\nq1 Q0 c 2 3.0 t\nq1 Q0 b 3 3.0 t\nq1 Q0 d 4 -1 t\n").unwrap();
    let run = read_run(&path).unwrap();
    let order: Vec<&str> = run.rankings["q1"].iter().map(|d| d.doc_id.as_str()).collect();
    assert_eq!(order, ["c", "b", "a", "d"]);
}

#[test]
fn malformed_lines_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.trec");
    let check = |content: &str, expected: &str, qrels: bool| {
        std::fs::write(&path, content).unwrap();
        let err = if qrels { read_qrels(&path).unwrap_err() } else { read_run(&path).unwrap_err() };
        assert!(err.to_string().contains(expected), "{err} / expected {expected}");
    };
    check("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 high t\n", "bad.trec: line 2: field `score`: not a finite number: high", false);
    check("q1 Q0 a 1 1.0 t\nq1 Q0 a 2 0.5 t\n", "line 2: field `doc_id`: retrieved twice", false);
    check("q1 Q0 a 1 NaN t\n", "line 1: field `score`: not a finite number", false);
    check("q1 Q0 a 1\n", "line 1: field `line`: wrong number of columns: expected 6", false);
    check("q1 0 a 1\n\nq1 0 b x\n", "line 3: field `relevance`: not an integer: x", true);
    check("q1 0 a 1\nq1 0 a 2\n", "line 2: field `doc_id`: judged twice", true);
}
