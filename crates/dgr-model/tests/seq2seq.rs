//! The BART-compatible student against HF transformers on a tiny random model (fixture made by
//! scripts/fixtures/make_model_fixtures.py): encoder states, logits, losses, gradients and
//! teacher-forced key scores.

mod common;

use burn::tensor::Device;
use common::*;
use dgr_model::key_trie::KeyTrie;
use dgr_model::seq2seq::{EncoderDecoder, Seq2Seq};

fn fixture() -> (std::path::PathBuf, serde_json::Value) {
    model_fixture("tiny-bart")
}

const PAD: u32 = 1;

/// The fixture's first source alone (batch 1), as key scoring takes it.
fn first_source(reference: &serde_json::Value, device: &Device) -> dgr_model::seq2seq::Source {
    let full = source(reference, device);
    let width = full.ids.dims()[1];
    dgr_model::seq2seq::Source { ids: full.ids.slice([0..1, 0..width]), mask: full.mask.slice([0..1, 0..width]) }
}

#[test]
fn forward_pass_and_losses_match_transformers() {
    let device = Device::flex();
    let (dir, reference) = fixture();
    let (model, config, report) = Seq2Seq::load(&dir, &device).unwrap();
    assert_eq!(report.applied, 92, "every tensor of the file is used: {:?}", report.unused);
    assert_eq!(config.pad_token_id, PAD);

    assert_forward_matches(&model, &reference, PAD, &device);
}

#[test]
fn key_scores_match_transformers() {
    let device = Device::flex();
    let (dir, reference) = fixture();
    let (model, _, _) = Seq2Seq::load(&dir, &device).unwrap();
    assert_key_scores_match(&model, &reference, &device);
}

#[test]
fn gradients_match_transformers() {
    let device = Device::flex().autodiff();
    let (dir, reference) = fixture();
    let (model, _, _) = Seq2Seq::load(&dir, &device).unwrap();
    let labels = rows(&reference["labels"]);
    let loss = model.generation_loss(&source(&reference, &device), &labels, PAD, 0.1).loss;
    let grads = loss.backward();
    let expected = &reference["grads"];
    // Linear weights are stored [in, out] here and [out, in] in PyTorch.
    let checks: Vec<(&str, Vec<f32>)> = vec![
        (
            "model.encoder.layers.0.fc1.weight",
            values(model.encoder.layers[0].fc1.weight.val().grad(&grads).unwrap().transpose()),
        ),
        (
            "model.decoder.layers.1.encoder_attn.q_proj.weight",
            values(model.decoder.layers[1].encoder_attn.q_proj.weight.val().grad(&grads).unwrap().transpose()),
        ),
        ("model.shared.weight", values(model.shared.weight.val().grad(&grads).unwrap())),
        (
            "model.decoder.layers.0.self_attn_layer_norm.weight",
            values(model.decoder.layers[0].self_attn_layer_norm.gamma.val().grad(&grads).unwrap()),
        ),
    ];
    for (name, ours) in checks {
        let theirs = floats(&expected[name]);
        let error = relative_error(&ours, &theirs);
        assert!(error <= 1e-3, "{name}: relative error {error}");
    }
}

#[test]
fn unsupported_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = fixture();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["model_type"] = "t5".into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(dir.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let err = Seq2Seq::load(tmp.path(), &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("config.json") && err.contains("model_type `t5`"), "{err}");
}

#[test]
fn incremental_decoding_with_a_cache_equals_teacher_forcing_and_follows_beam_reordering() {
    let device = Device::flex();
    let (dir, reference) = fixture();
    let (model, _, _) = Seq2Seq::load(&dir, &device).unwrap();
    assert_incremental_decoding_matches(&model, &reference, PAD, &device);
}

#[test]
fn saved_weights_load_back_to_the_same_model_under_hf_names() {
    let device = Device::flex();
    let (dir, reference) = fixture();
    let (model, config, _) = Seq2Seq::load(&dir, &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path(), &config).unwrap();
    let (again, config_again, report) = Seq2Seq::load(tmp.path(), &device).unwrap();
    assert_eq!(config_again, config);
    assert_eq!(report.applied, 92);
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let source = source(&reference, &device);
    let labels = rows(&reference["labels"]);
    let before = values(model.decode(&model.encode(&source), model.shift_right(&labels, PAD, &device)));
    let after = values(again.decode(&again.encode(&source), again.shift_right(&labels, PAD, &device)));
    assert_eq!(before, after);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "config.json and model.safetensors only: {leftovers:?}");
}

#[test]
fn packed_key_scores_equal_one_key_a_row_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    let (dir, reference) = fixture();
    let (model, _, _) = Seq2Seq::load(&dir, &device).unwrap();
    let first = first_source(&reference, &device);
    // Beam prefixes (every prefix is a key), a repeat, keys that share a prefix and diverge.
    let keys: Vec<Vec<u32>> = vec![
        vec![5],
        vec![5, 9],
        vec![5, 9, 14],
        vec![5, 9, 14, 3],
        vec![5, 9, 14],
        vec![5, 7],
        vec![20, 21],
        vec![20],
        vec![33],
    ];
    // Distinct prefixes: 5, 5 9, 5 9 14, 5 9 14 3, 5 7, 20, 20 21, 33; of them 5, 5 9, 5 9 14 and
    // 20 are extended, so one row [start, 5, 9, 14, 20] decodes all nine keys.
    let trie = KeyTrie::new(&keys, model.decoder_start());
    assert_eq!(trie.tokens, vec![vec![model.decoder_start(), 5, 9, 14, 20]]);
    assert_eq!(trie.depths, vec![vec![0, 1, 2, 3, 1]]);
    assert_eq!(trie.picks.len(), 8);
    for (k, key) in keys.iter().enumerate() {
        let read: Vec<u32> = trie.paths[k].iter().map(|&p| trie.picks[p].2).collect();
        assert_eq!(&read, key);
    }
    // 20 attends to the start token and itself, not to the 5 9 14 branch before it.
    let hidden = trie.hidden();
    assert_eq!(&hidden[4 * 5..5 * 5], &[false, true, true, true, false]);

    let weights: Vec<f32> = (0..keys.len()).map(|i| 0.5 + i as f32).collect();
    let weights = burn::tensor::Tensor::<1>::from_data(burn::tensor::TensorData::new(weights, [keys.len()]), &device);
    let row_by_row = model.score_keys(&model.encode(&first), &keys);
    let grads = (row_by_row.clone() * weights.clone()).sum().backward();
    let expected_grad = values(model.shared.weight.val().grad(&grads).unwrap());
    let together = model.score_keys_packed(&model.encode(&first), &keys);
    let grads = (together.clone() * weights).sum().backward();
    let grad = values(model.shared.weight.val().grad(&grads).unwrap());

    let diff = max_abs_diff(&values(together), &values(row_by_row));
    assert!(diff <= 1e-5, "packed scores differ by {diff}");
    // Gradients reach the embeddings summed over many positions: compared relative to the largest.
    let diff = relative_error(&grad, &expected_grad);
    assert!(diff <= 1e-5, "packed gradients differ by {diff} (relative)");
}

#[test]
fn packed_key_scores_equal_one_key_a_row_across_several_rows() {
    let device = Device::flex();
    let (dir, reference) = fixture();
    let (model, _, _) = Seq2Seq::load(&dir, &device).unwrap();
    let first = first_source(&reference, &device);
    // 600 keys of up to 12 tokens, 36 first tokens then 6: thousands of shared prefixes, rows of
    // several first tokens each.
    let mut state = 7u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let keys: Vec<Vec<u32>> = (0..600)
        .map(|_| (0..=next(12)).map(|i| 4 + next(if i == 0 { 36 } else { 6 }) as u32).collect())
        .chain([Vec::new()])
        .collect();
    let trie = KeyTrie::new(&keys, model.decoder_start());
    assert!(trie.tokens.len() > 2, "{} rows", trie.tokens.len());
    assert!(trie.tokens.iter().all(|row| row.len() <= dgr_model::key_trie::ROW_POSITIONS));

    let encoded = model.encode(&first);
    let packed = values(model.score_keys_packed(&encoded, &keys));
    let row_by_row = values(model.score_keys(&encoded, &keys));
    assert_eq!(packed[600], 0.0, "an empty key scores 0");
    let diff = max_abs_diff(&packed, &row_by_row);
    assert!(diff <= 1e-4, "packed scores differ by {diff}");
}
