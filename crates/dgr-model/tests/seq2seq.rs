//! The BART-compatible student against HF transformers on a tiny random model (fixture made by
//! scripts/fixtures/make_model_fixtures.py): encoder states, logits, losses, gradients and
//! teacher-forced key scores.

mod common;

use burn::tensor::Device;
use common::*;
use dgr_model::seq2seq::{EncoderDecoder, PackedKeys, Seq2Seq};

fn fixture() -> (std::path::PathBuf, serde_json::Value) {
    model_fixture("tiny-bart")
}

const PAD: u32 = 1;

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
    let full = source(&reference, &device);
    let width = full.ids.dims()[1];
    let first =
        dgr_model::seq2seq::Source { ids: full.ids.slice([0..1, 0..width]), mask: full.mask.slice([0..1, 0..width]) };
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
    let packed = PackedKeys::new(&keys);
    assert_eq!(packed.rows.len(), 4, "{:?}", packed.rows);
    for (k, key) in keys.iter().enumerate() {
        assert!(packed.rows[packed.row_of[k]].starts_with(key), "{key:?}");
    }

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
