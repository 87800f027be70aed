//! The BART-compatible student against HF transformers on a tiny random model (fixture made by
//! scripts/fixtures/make_model_fixtures.py): encoder states, logits, losses, gradients and
//! teacher-forced key scores.

mod common;

use burn::tensor::Device;
use common::*;
use dgr_model::seq2seq::{EncoderDecoder, Seq2Seq};

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
