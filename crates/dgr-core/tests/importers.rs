//! Importers on real-format fixtures (tests/fixtures, made by scripts/fixtures/make_import_fixtures.py
//! from real Wikipedia text): the four layouts of the same articles must give the same dataset,
//! and malformed input must be reported by file, line and field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dgr_core::arrow_file::read_records;
use dgr_core::import::{DatasetFormat, DatasetManifest, ImportOptions, ImportSummary, import};
use dgr_core::progress::NoProgress;
use dgr_core::trec::read_qrels;
use dgr_core::{Passage, Query};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn run_import(format: DatasetFormat, input: &Path, out: &Path, skip_invalid: bool) -> dgr_core::Result<ImportSummary> {
    let options = ImportOptions { skip_invalid, ..ImportOptions::default() };
    import(format, input, out, &options, &NoProgress)
}

/// The dataset as text only (ids differ between layouts): passage texts, and per split the
/// (query text, relevant passage text) pairs.
struct Content {
    texts: BTreeSet<String>,
    judged: BTreeMap<String, BTreeSet<(String, String)>>,
    queries: BTreeMap<String, Vec<Query>>,
}

fn content(dir: &Path) -> Content {
    let manifest = DatasetManifest::load(dir).unwrap();
    manifest.verify_checksums(dir).unwrap();
    let corpus: Vec<Passage> = read_records(&dir.join("corpus.arrow")).unwrap();
    let text_of: BTreeMap<_, _> = corpus.iter().map(|p| (p.id.clone(), p.text.clone())).collect();
    let mut judged = BTreeMap::new();
    let mut queries = BTreeMap::new();
    for split in manifest.splits() {
        let qs: Vec<Query> = read_records(&dir.join(format!("queries-{split}.arrow"))).unwrap();
        let query_text: BTreeMap<_, _> = qs.iter().map(|q| (q.id.clone(), q.text.clone())).collect();
        if manifest.file("qrels", Some(split)).is_some() {
            let qrels = read_qrels(&dir.join(format!("qrels-{split}.tsv"))).unwrap();
            let pairs = qrels
                .judgments
                .iter()
                .flat_map(|(q, docs)| docs.keys().map(|d| (query_text[q].clone(), text_of[d].clone())))
                .collect();
            judged.insert(split.to_string(), pairs);
        }
        queries.insert(split.to_string(), qs);
    }
    Content { texts: corpus.into_iter().map(|p| p.text).collect(), judged, queries }
}

#[test]
fn wiki_vital_subset_becomes_known_item_queries() {
    let out = tempfile::tempdir().unwrap();
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    let summary = run_import(DatasetFormat::WikiVital, &input, &out.path().join("data"), false).unwrap();
    assert_eq!(summary.passages, 40);
    assert_eq!(summary.queries, BTreeMap::from([("dev".into(), 3), ("test".into(), 1), ("train".into(), 31)]));
    // 40 articles: 2 without description, 3 sharing "Family of birds", 35 queries.
    assert_eq!(summary.dropped["article without description: no query"], 2);
    assert_eq!(summary.dropped["description shared by several articles: no query"], 3);
    assert!(summary.skipped.is_empty());

    let data = out.path().join("data");
    let corpus: Vec<Passage> = read_records(&data.join("corpus.arrow")).unwrap();
    let source: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
    for passage in &corpus {
        let entry = &source[passage.title.as_str()];
        assert_eq!(passage.text, entry["extract"].as_str().unwrap());
        assert_eq!(passage.id, passage.title.replace(' ', "_"));
    }
    // Each query's one relevant passage is the article it describes.
    for split in ["train", "dev", "test"] {
        let queries: Vec<Query> = read_records(&data.join(format!("queries-{split}.arrow"))).unwrap();
        let qrels = read_qrels(&data.join(format!("qrels-{split}.tsv"))).unwrap();
        for q in &queries {
            let passage = corpus.iter().find(|p| p.id == q.id).unwrap();
            assert_eq!(q.text, source[passage.title.as_str()]["description"].as_str().unwrap());
            assert_eq!(qrels.judgments[&q.id].iter().collect::<Vec<_>>(), vec![(&q.id, &1)]);
        }
    }
}

#[test]
fn the_four_layouts_of_the_same_articles_give_the_same_dataset() {
    let out = tempfile::tempdir().unwrap();
    let import_to = |format, input: PathBuf| {
        let dir = out.path().join(format!("{format}"));
        run_import(format, &input, &dir, false).unwrap();
        content(&dir)
    };
    let wiki = import_to(DatasetFormat::WikiVital, fixtures().join("wiki-vital/summaries_subset.json"));
    let beir = import_to(DatasetFormat::Beir, fixtures().join("beir"));
    let marco = import_to(DatasetFormat::Msmarco, fixtures().join("msmarco"));
    let dpr = import_to(DatasetFormat::Dpr, fixtures().join("dpr"));

    assert_eq!(wiki.texts.len(), 40);
    for other in [&beir, &marco, &dpr] {
        assert_eq!(other.texts, wiki.texts);
    }
    assert_eq!(beir.judged, wiki.judged);
    assert_eq!(marco.judged, wiki.judged);
    // DPR: the train split comes from biencoder JSON with judgments; dev and test come from
    // .qa.csv files with answers (the article titles) and no judgments.
    assert_eq!(dpr.judged.keys().collect::<Vec<_>>(), vec!["train"]);
    assert_eq!(dpr.judged["train"], wiki.judged["train"]);
    for split in ["dev", "test"] {
        let wiki_texts: BTreeSet<_> = wiki.queries[split].iter().map(|q| q.text.clone()).collect();
        let dpr_texts: BTreeSet<_> = dpr.queries[split].iter().map(|q| q.text.clone()).collect();
        assert_eq!(dpr_texts, wiki_texts);
        for (i, q) in dpr.queries[split].iter().enumerate() {
            assert_eq!(q.id, format!("{split}-{i}"));
            assert_eq!(q.answers.len(), 1);
        }
    }
}

/// A writable copy of a fixture directory.
fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let dest = to.join(name);
    let mut stack = vec![(fixtures().join(name), dest.clone())];
    while let Some((src, dst)) = stack.pop() {
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            let target = dst.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    dest
}

/// Replaces line `n` (1-based) of a file.
fn set_line(path: &Path, n: usize, line: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[n - 1] = line;
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn line(path: &Path, n: usize) -> String {
    std::fs::read_to_string(path).unwrap().lines().nth(n - 1).unwrap().to_string()
}

fn import_error(format: DatasetFormat, input: &Path, out: &Path) -> String {
    let dest = out.join("data");
    let err = run_import(format, input, &dest, false).unwrap_err().to_string();
    assert!(!dest.exists(), "a failed import leaves no output");
    let leftovers: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "staging directories removed: {leftovers:?}");
    err
}

#[test]
fn beir_errors_name_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = copy_fixture("beir", tmp.path());
    let corpus = beir.join("corpus.jsonl");
    let good = std::fs::read_to_string(&corpus).unwrap();

    set_line(&corpus, 3, r#"{"_id": "x", "title": "t", "text": "#);
    let err = import_error(DatasetFormat::Beir, &beir, tmp.path());
    assert!(err.contains("corpus.jsonl: line 3: field `record`: malformed JSON"), "{err}");

    std::fs::write(&corpus, &good).unwrap();
    set_line(&corpus, 2, r#"{"title": "t", "text": "some text"}"#);
    let err = import_error(DatasetFormat::Beir, &beir, tmp.path());
    assert!(err.contains("corpus.jsonl: line 2: field `_id`: is missing"), "{err}");

    std::fs::write(&corpus, &good).unwrap();
    set_line(&corpus, 5, &line(&corpus, 4));
    let err = import_error(DatasetFormat::Beir, &beir, tmp.path());
    assert!(err.contains("corpus.jsonl: line 5: field `id`: duplicate passage id"), "{err}");

    std::fs::write(&corpus, &good).unwrap();
    set_line(&corpus, 6, r#"{"_id": "empty", "title": "t", "text": "  "}"#);
    let err = import_error(DatasetFormat::Beir, &beir, tmp.path());
    assert!(err.contains("corpus.jsonl: line 6: field `text`: is empty"), "{err}");

    std::fs::write(&corpus, &good).unwrap();
    let qrels = beir.join("qrels/train.tsv");
    let q = line(&qrels, 2);
    let qid = q.split('\t').next().unwrap();
    std::fs::write(&qrels, format!("{}{qid}\tNo_such_article\t1\n", std::fs::read_to_string(&qrels).unwrap())).unwrap();
    let n = std::fs::read_to_string(&qrels).unwrap().lines().count();
    let err = import_error(DatasetFormat::Beir, &beir, tmp.path());
    assert!(err.contains(&format!("train.tsv: line {n}: field `doc_id`: unknown passage: No_such_article")), "{err}");
}

#[test]
fn skip_invalid_imports_the_rest_and_counts_what_it_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let beir = copy_fixture("beir", tmp.path());
    let corpus = beir.join("corpus.jsonl");
    set_line(&corpus, 3, "not json");
    set_line(&corpus, 5, &line(&corpus, 4));
    set_line(&corpus, 7, r#"{"_id": "with space", "text": "x"}"#);
    let summary = run_import(DatasetFormat::Beir, &beir, &tmp.path().join("data"), true).unwrap();
    assert_eq!(summary.passages, 37);
    // The judgments of the two judged passages that were skipped go with them.
    assert_eq!(
        summary.skipped,
        BTreeMap::from([
            ("doc_id: unknown passage".to_string(), 2),
            ("id: contains whitespace".to_string(), 1),
            ("id: duplicate passage id".to_string(), 1),
            ("record: malformed JSON".to_string(), 1),
        ])
    );
}

#[test]
fn msmarco_and_dpr_errors_name_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let marco = copy_fixture("msmarco", tmp.path());
    set_line(&marco.join("collection.tsv"), 7, "42 no tab here");
    let err = import_error(DatasetFormat::Msmarco, &marco, tmp.path());
    assert!(err.contains("collection.tsv: line 7: field `passage`: missing"), "{err}");

    let marco = copy_fixture("msmarco", &tmp.path().join("m2"));
    set_line(&marco.join("qrels.train.tsv"), 2, "1001 0 0 high");
    let err = import_error(DatasetFormat::Msmarco, &marco, tmp.path());
    assert!(err.contains("qrels.train.tsv: line 2: field `relevance`: not an integer: high"), "{err}");

    let dpr = copy_fixture("dpr", tmp.path());
    let qa = dpr.join("wiki-dev.qa.csv");
    let question = line(&qa, 1).split('\t').next().unwrap().to_string();
    set_line(&qa, 1, &format!("{question}\t['unterminated"));
    let err = import_error(DatasetFormat::Dpr, &dpr, tmp.path());
    assert!(err.contains("wiki-dev.qa.csv: line 1: field `answers`: not a Python list of strings"), "{err}");
}

#[test]
fn an_existing_output_is_kept_unless_overwrite_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "precious").unwrap();
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    let err = run_import(DatasetFormat::WikiVital, &input, &out, false).unwrap_err();
    assert!(err.to_string().contains("output already exists"), "{err}");
    assert!(out.join("mine.txt").exists());

    let options = ImportOptions { overwrite: true, ..ImportOptions::default() };
    import(DatasetFormat::WikiVital, &input, &out, &options, &NoProgress).unwrap();
    assert!(!out.join("mine.txt").exists());
    assert!(DatasetManifest::load(&out).is_ok());
}

#[test]
fn a_damaged_dataset_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    run_import(DatasetFormat::Msmarco, &fixtures().join("msmarco"), &out, false).unwrap();
    let qrels = out.join("qrels-train.tsv");
    let text = std::fs::read_to_string(&qrels).unwrap();
    std::fs::write(&qrels, text.replacen(" 1\n", " 2\n", 1)).unwrap();
    let manifest = DatasetManifest::load(&out).unwrap(); // same size: only the checksum sees it
    let err = manifest.verify_checksums(&out).unwrap_err();
    assert!(err.to_string().contains("qrels-train.tsv: checksum differs"), "{err}");

    std::fs::write(&qrels, "").unwrap();
    let err = DatasetManifest::load(&out).unwrap_err();
    assert!(err.to_string().contains("bytes, dataset.json records"), "{err}");
}
