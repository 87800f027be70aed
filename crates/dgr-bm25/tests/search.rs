//! BM25 over the real wiki-vital fixture subset.

use std::path::{Path, PathBuf};

use dgr_bm25::{Bm25Index, IndexOptions, build_index};
use dgr_core::arrow_file::read_records;
use dgr_core::import::{DatasetFormat, ImportOptions, import};
use dgr_core::progress::NoProgress;
use dgr_core::{Passage, Query};

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    index: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wiki-vital/summaries_subset.json");
    let data = dir.path().join("data");
    import(DatasetFormat::WikiVital, &input, &data, &ImportOptions::default(), &NoProgress).unwrap();
    let index = dir.path().join("bm25");
    let options = IndexOptions { threads: 2, memory_mb: 50 };
    let manifest = build_index(&data.join("corpus.arrow"), &index, options, &NoProgress).unwrap();
    assert_eq!(manifest.documents, 40);
    Fixture { _dir: dir, data, index }
}

#[test]
fn titles_find_their_article_first_and_results_are_ordered() {
    let f = fixture();
    let index = Bm25Index::open(&f.index).unwrap();
    let corpus: Vec<Passage> = read_records(&f.data.join("corpus.arrow")).unwrap();
    for passage in &corpus {
        let top = index.search(&passage.title, 5).unwrap();
        assert!(top.len() <= 5);
        assert!(top.windows(2).all(|w| w[0].score >= w[1].score), "{top:?}");
        assert_eq!(top[0].doc_id, passage.id, "title query {:?} -> {top:?}", passage.title);
    }
}

#[test]
fn parallel_search_equals_one_query_at_a_time() {
    let f = fixture();
    let index = Bm25Index::open(&f.index).unwrap();
    let queries: Vec<Query> = read_records(&f.data.join("queries-train.arrow")).unwrap();
    let run = index.search_all(&queries, 10, 3, &NoProgress).unwrap();
    assert_eq!(run.rankings.len(), queries.len());
    for q in &queries {
        assert_eq!(run.rankings[&q.id], index.search(&q.text, 10).unwrap());
    }
    // Known-item descriptions are hard for BM25, but most find their article in the top 10.
    let found = queries.iter().filter(|q| run.rankings[&q.id].iter().any(|d| d.doc_id == q.id)).count();
    assert!(found * 10 >= queries.len() * 7, "{found} of {}", queries.len());
}

#[test]
fn queries_without_terms_return_nothing() {
    let f = fixture();
    let index = Bm25Index::open(&f.index).unwrap();
    assert!(index.search("", 10).unwrap().is_empty());
    assert!(index.search(" ?! -- ", 10).unwrap().is_empty());
    assert!(index.search("qwzxqwzx", 10).unwrap().is_empty());
}

#[test]
fn a_directory_without_a_valid_manifest_is_refused() {
    let f = fixture();
    let manifest = f.index.join(dgr_bm25::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"schema_version\": 1", "\"schema_version\": 7")).unwrap();
    let err = Bm25Index::open(&f.index).err().unwrap().to_string();
    assert!(err.contains("version 7"), "{err}");
    std::fs::remove_file(&manifest).unwrap();
    let err = Bm25Index::open(&f.index).err().unwrap().to_string();
    assert!(err.contains("bm25.json") && err.contains("dgr bm25 index"), "{err}");
}
