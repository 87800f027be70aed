//! The teacher's batched, length-sorted scores equal the model's scores of single pairs, and
//! the bi-encoder's equal sentence-transformers' cosine similarities.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use dgr_model::tokenizer::Overlong;
use dgr_teacher::TeacherError;
use dgr_teacher::teacher::{CandidateSource, Candidates, Teacher, TeacherConfig, TeacherKind};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec(model: PathBuf, kind: TeacherKind, batch_size: usize) -> TeacherConfig {
    TeacherConfig {
        model,
        kind,
        query_prefix: String::new(),
        passage_prefix: String::new(),
        max_tokens: 64,
        overlong: Overlong::Truncate,
        batch_size,
        candidates: CandidateSource::Bm25,
        depth: 20,
        shard_queries: 8,
    }
}

/// Queries with passage lists of different lengths and sizes (some passages shared).
fn lists(texts: &[String]) -> Vec<(String, Vec<String>)> {
    (0..5)
        .map(|q| {
            let passages = (0..(2 + q % 3)).map(|k| texts[(q * 3 + k * 5 + 1) % texts.len()].clone()).collect();
            (texts[q].clone(), passages)
        })
        .collect()
}

fn score(teacher: &Teacher, lists: &[(String, Vec<String>)]) -> Vec<Vec<f64>> {
    let candidates: Vec<Candidates<'_>> =
        lists.iter().map(|(q, ps)| Candidates { query: q, passages: ps.as_slice() }).collect();
    teacher.score(&candidates, &AtomicBool::new(false)).unwrap()
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= tolerance, "{u} vs {v}");
        }
    }
}

#[test]
fn bi_encoder_batches_score_like_single_pairs_and_like_sentence_transformers() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/models/minilm-embeddings.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<String> =
        fixture["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let embeddings: Vec<Vec<f64>> = fixture["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    let model = root().join("assets/minilm");
    assert!(model.is_dir(), "MiniLM missing: run scripts/fetch-assets.sh");
    let lists = lists(&sentences);

    let batched =
        score(&Teacher::load(spec(model.clone(), TeacherKind::BiEncoder, 7), Device::flex()).unwrap(), &lists);
    let single = score(&Teacher::load(spec(model, TeacherKind::BiEncoder, 1), Device::flex()).unwrap(), &lists);
    assert_close(&batched, &single, 1e-6);

    // Cosine of the reference embeddings.
    let index = |text: &str| sentences.iter().position(|s| s == text).unwrap();
    let reference: Vec<Vec<f64>> = lists
        .iter()
        .map(|(q, ps)| {
            let e = &embeddings[index(q)];
            ps.iter().map(|p| embeddings[index(p)].iter().zip(e).map(|(a, b)| a * b).sum()).collect()
        })
        .collect();
    assert_close(&batched, &reference, 1e-5);
}

/// A word-level `tokenizer.json` over the tiny model's 100-token vocabulary.
fn tiny_tokenizer(dir: &Path, words: &[&str]) {
    let mut vocab = serde_json::Map::new();
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    for (id, token) in specials.iter().chain(words).enumerate() {
        vocab.insert(token.to_string(), id.into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(id, t)| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

#[test]
fn cross_encoder_batches_score_like_single_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-cross");
    std::fs::create_dir_all(&model).unwrap();
    let source = root().join("tests/fixtures/models/tiny-bert-cls");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(source.join(file), model.join(file)).unwrap();
    }
    let words = [
        "the", "art", "of", "africa", "is", "a", "river", "in", "city", "music", "history", "number", "zero",
        "natural", "empty", "quantity", "language", "world", "war", "king", "science", "light", "water", "sun",
    ];
    tiny_tokenizer(&model, &words);
    let texts: Vec<String> = (0..12)
        .map(|i| (0..(2 + (i * 7) % 11)).map(|k| words[(i * 5 + k * 3) % words.len()]).collect::<Vec<_>>().join(" "))
        .collect();
    let lists = lists(&texts);
    let batched =
        score(&Teacher::load(spec(model.clone(), TeacherKind::CrossEncoder, 4), Device::flex()).unwrap(), &lists);
    let single =
        score(&Teacher::load(spec(model.clone(), TeacherKind::CrossEncoder, 1), Device::flex()).unwrap(), &lists);
    assert_close(&batched, &single, 1e-5);
    // Scores differ between pairs: the model reads the text.
    let flat: Vec<f64> = batched.iter().flatten().copied().collect();
    assert!(flat.iter().any(|s| (s - flat[0]).abs() > 1e-4), "{flat:?}");

    // A set cancel flag stops the work between batches.
    let teacher = Teacher::load(spec(model, TeacherKind::CrossEncoder, 4), Device::flex()).unwrap();
    let candidates: Vec<Candidates<'_>> =
        lists.iter().map(|(q, ps)| Candidates { query: q, passages: ps.as_slice() }).collect();
    let cancelled = teacher.score(&candidates, &AtomicBool::new(true));
    assert!(matches!(cancelled, Err(TeacherError::Cancelled)));
}
