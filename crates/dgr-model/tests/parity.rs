//! Parity with PyTorch on real weights and on a HF-saved tiny model (fixtures made by
//! scripts/fixtures/make_model_fixtures.py), and clear errors on weights that do not fit.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{floats, json, max_abs_diff, root, rows, unpadded, values};
use dgr_model::bert::EncoderInput;
use dgr_model::heads::{BiEncoder, CrossEncoder};
use dgr_model::tokenizer::{Overlong, TextTokenizer, batch};

fn minilm_dir() -> PathBuf {
    let dir = root().join("assets/minilm");
    assert!(dir.join("model.safetensors").is_file(), "MiniLM weights missing: run scripts/fetch-assets.sh");
    dir
}

#[test]
fn minilm_sentence_embeddings_match_sentence_transformers() {
    let device = Device::flex();
    let fixture = json(&root().join("tests/fixtures/models/minilm-embeddings.json"));
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), 128).unwrap();
    let (model, config, report) = BiEncoder::load(&dir, &device).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers), (384, 6));
    assert_eq!(report.applied, 101, "every encoder tensor of MiniLM is loaded");

    let sentences: Vec<&str> = fixture["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(sentences.len() >= 20);
    let encoded: Vec<_> = sentences.iter().map(|s| tokenizer.encode(s).unwrap()).collect();
    for (enc, expected) in encoded.iter().zip(fixture["input_ids"].as_array().unwrap()) {
        let expected: Vec<u32> = expected.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(enc.ids, expected, "token ids equal the HF tokenizer's");
    }
    // One padded batch of all sentences: padding must not change any embedding.
    let embeddings = values(model.embed(&batch(&encoded, &device)));
    let expected = floats(&fixture["embeddings"]);
    let diff = max_abs_diff(&embeddings, &expected);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

fn reference_input(reference: &serde_json::Value, device: &Device) -> EncoderInput {
    let ints = |key: &str| {
        let rows = reference[key].as_array().unwrap();
        let values: Vec<i64> =
            rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap())).collect();
        let shape = [rows.len(), values.len() / rows.len()];
        Tensor::<2, Int>::from_data(TensorData::new(values, shape), device)
    };
    EncoderInput {
        input_ids: ints("input_ids"),
        token_type_ids: ints("token_type_ids"),
        attention_mask: ints("attention_mask"),
    }
}

/// Scores and hidden states of a tiny `*ForSequenceClassification` fixture, within 1e-4.
fn assert_cross_encoder_matches(fixture: &str, tensors: usize) {
    let device = Device::flex();
    let dir = root().join("tests/fixtures/models").join(fixture);
    let reference = json(&dir.join("reference.json"));
    let (model, _, report) = CrossEncoder::load(&dir, &device).unwrap();
    assert_eq!((report.applied, report.unused.len()), (tensors, 0), "{:?}", report.unused);
    let input = reference_input(&reference, &device);

    let scores = values(model.score(&input));
    let diff = max_abs_diff(&scores, &floats(&reference["scores"]));
    assert!(diff <= 1e-4, "scores differ by {diff}: {scores:?}");

    // Hidden states at real (unpadded) positions.
    let states = values(model.bert.forward(&input));
    let expected = floats(&reference["last_hidden_state"]);
    let mask = rows(&reference["attention_mask"]);
    let state_diff = max_abs_diff(&unpadded(&states, &mask), &unpadded(&expected, &mask));
    assert!(state_diff <= 1e-4, "hidden states differ by {state_diff}");
    eprintln!("{fixture}: max abs diff of scores {diff:.2e}, of hidden states {state_diff:.2e}");
}

#[test]
fn tiny_cross_encoder_matches_pytorch() {
    assert_cross_encoder_matches("tiny-bert-cls", 41);
}

#[test]
fn tiny_electra_cross_encoder_matches_pytorch() {
    // 39 encoder tensors (with the projection of the embeddings) + the head's 4.
    assert_cross_encoder_matches("tiny-electra-cls", 43);

    // The discriminator's encoder alone, as a bi-encoder: the `electra.` prefix is dropped and
    // the classification head is left unused.
    let device = Device::flex();
    let dir = root().join("tests/fixtures/models/tiny-electra-cls");
    let reference = json(&dir.join("reference.json"));
    let (encoder, config, report) = BiEncoder::load(&dir, &device).unwrap();
    assert_eq!(config.embedding_size, Some(16));
    assert_eq!(report.unused.len(), 4, "{:?}", report.unused);
    let input = reference_input(&reference, &device);
    let states = values(encoder.bert.forward(&input));
    let mask = rows(&reference["attention_mask"]);
    let diff = max_abs_diff(&unpadded(&states, &mask), &unpadded(&floats(&reference["last_hidden_state"]), &mask));
    assert!(diff <= 1e-4, "hidden states differ by {diff}");
}

/// A copy of the tiny model with its config edited.
fn edited_copy(to: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = root().join("tests/fixtures/models/tiny-bert-cls");
    let dir = to.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config = json(&src.join("config.json"));
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn weights_that_do_not_fit_are_named() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();

    let dir = edited_copy(tmp.path(), |c| c["intermediate_size"] = 40.into());
    let err = CrossEncoder::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("Shape mismatch") && err.contains("intermediate.dense"), "{err}");
    assert!(err.contains("40") && err.contains("37"), "both shapes: {err}");

    let dir = edited_copy(&tmp.path().join("b"), |c| c["num_hidden_layers"] = 3.into());
    let err = CrossEncoder::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("missing tensors") && err.contains("layer.2"), "{err}");

    let dir = edited_copy(&tmp.path().join("c"), |c| c["model_type"] = "t5".into());
    let err = CrossEncoder::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("model_type `t5` is not supported"), "{err}");

    let dir = edited_copy(&tmp.path().join("d"), |c| c["hidden_act"] = "relu".into());
    let err = CrossEncoder::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("hidden_act `relu`"), "{err}");
}

#[test]
fn long_inputs_are_truncated_to_the_position_table() {
    let tokenizer = TextTokenizer::from_file(&minilm_dir().join("tokenizer.json"), 16).unwrap();
    let long = "word ".repeat(100);
    let single = tokenizer.encode(&long).unwrap();
    assert_eq!(single.ids.len(), 16);
    assert!(single.truncated);
    assert_eq!((single.ids[0], single.ids[15]), (101, 102), "[CLS] … [SEP] kept");
    let pair = tokenizer.encode_pair("a short query", &long).unwrap();
    assert_eq!(pair.ids.len(), 16);
    assert!(pair.type_ids.contains(&1));
    let short = tokenizer.encode("a short query").unwrap();
    assert!(!short.truncated);

    // Under the error policy, the same inputs are refused and short ones pass unchanged.
    let strict =
        TextTokenizer::from_file(&minilm_dir().join("tokenizer.json"), 16).unwrap().with_overlong(Overlong::Error);
    let err = strict.encode(&long).unwrap_err().to_string();
    assert!(err.contains("longer than 16 tokens") && err.contains("word word"), "{err}");
    assert!(strict.encode_pair("a short query", &long).is_err());
    assert_eq!(strict.encode("a short query").unwrap(), short);
}
