//! The BERT2BERT student against HF `EncoderDecoderModel(BertModel, BertLMHeadModel)` on a tiny
//! random model (fixture made by scripts/fixtures/make_model_fixtures.py), and its warm start
//! from the real MiniLM weights.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::heads::BiEncoder;
use dgr_model::seq2seq::{EncoderDecoder, Source};

#[test]
fn forward_pass_losses_and_key_scores_match_transformers() {
    let device = Device::flex();
    let (dir, reference) = model_fixture("tiny-bert2bert");
    let (model, config, report) = Bert2Bert::load(&dir, &device).unwrap();
    // 101 tensors in the file; the encoder's pooler is not part of a seq2seq model.
    assert_eq!(report.applied, 99);
    assert_eq!(report.unused.len(), 2, "{:?}", report.unused);
    assert_forward_matches(&model, &reference, config.pad_token_id, &device);
    assert_key_scores_match(&model, &reference, &device);
}

#[test]
fn incremental_decoding_with_a_cache_equals_teacher_forcing_and_follows_beam_reordering() {
    let device = Device::flex();
    let (dir, reference) = model_fixture("tiny-bert2bert");
    let (model, config, _) = Bert2Bert::load(&dir, &device).unwrap();
    assert_incremental_decoding_matches(&model, &reference, config.pad_token_id, &device);
}

#[test]
fn gradients_match_transformers() {
    let device = Device::flex().autodiff();
    let (dir, reference) = model_fixture("tiny-bert2bert");
    let (model, config, _) = Bert2Bert::load(&dir, &device).unwrap();
    let loss =
        model.generation_loss(&source(&reference, &device), &rows(&reference["labels"]), config.pad_token_id, 0.1).loss;
    let grads = loss.backward();
    let grad2 = |t: Tensor<2>| values(t.grad(&grads).unwrap());
    let decoder = &model.decoder.bert;
    let checks = [
        // Linear weights are [in, out] here and [out, in] in PyTorch.
        (
            "encoder.encoder.layer.0.intermediate.dense.weight",
            values(model.encoder.encoder.layer[0].intermediate.dense.weight.val().grad(&grads).unwrap().transpose()),
        ),
        (
            "decoder.bert.encoder.layer.1.crossattention.self.query.weight",
            values(
                decoder.encoder.layer[1].crossattention.self_attn.query.weight.val().grad(&grads).unwrap().transpose(),
            ),
        ),
        ("decoder.bert.embeddings.word_embeddings.weight", grad2(decoder.embeddings.word_embeddings.weight.val())),
        (
            "decoder.cls.predictions.transform.LayerNorm.weight",
            values(model.decoder.cls.predictions.transform.layer_norm.gamma.val().grad(&grads).unwrap()),
        ),
    ];
    for (name, ours) in checks {
        let error = relative_error(&ours, &floats(&reference["grads"][name]));
        assert!(error <= 1e-3, "{name}: relative error {error}");
    }
}

#[test]
fn warm_start_from_minilm_copies_both_stacks_and_trains() {
    let device = Device::flex();
    let dir = root().join("assets/minilm");
    assert!(dir.join("model.safetensors").is_file(), "MiniLM weights missing: run scripts/fetch-assets.sh");
    let (model, config) = Bert2Bert::warm_start(&dir, 101, 0, &device).unwrap();
    assert_eq!(config.decoder.num_hidden_layers, 6);
    let (minilm, _, _) = BiEncoder::load(&dir, &device).unwrap();
    let reference = values(minilm.bert.encoder.layer[3].output.dense.weight.val());
    assert_eq!(values(model.encoder.encoder.layer[3].output.dense.weight.val()), reference);
    assert_eq!(values(model.decoder.bert.encoder.layer[3].output.dense.weight.val()), reference);
    // Cross-attention is new: normal(0, 0.02) weights, zero biases.
    let cross = &model.decoder.bert.encoder.layer[0].crossattention.self_attn.query;
    let weights = values(cross.weight.val());
    let std = (weights.iter().map(|w| w * w).sum::<f32>() / weights.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.002, "fresh weights std {std}");
    assert!(values(cross.bias.as_ref().unwrap().val()).iter().all(|&b| b == 0.0));

    // A few steps of teacher forcing on one pair lower the loss.
    let train = Device::flex().autodiff();
    let (mut model, _) = Bert2Bert::warm_start(&dir, 101, 0, &train).unwrap();
    let src = Source {
        ids: int_tensor(&[vec![101, 2034, 3185, 2011, 6061, 102]], &train),
        mask: int_tensor(&[vec![1; 6]], &train),
    };
    let labels = vec![vec![2034, 3185, 102]];
    let mut optim = burn::optim::AdamWConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..5 {
        let loss = model.generation_loss(&src, &labels, 0, 0.0).loss;
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[4] < losses[0] * 0.8, "loss should fall: {losses:?}");
}

#[test]
fn saved_weights_load_back_to_the_same_model() {
    let device = Device::flex();
    let (dir, reference) = model_fixture("tiny-bert2bert");
    let (model, config, _) = Bert2Bert::load(&dir, &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path(), &config).unwrap();
    let (again, config_again, report) = Bert2Bert::load(tmp.path(), &device).unwrap();
    assert_eq!(config_again, config);
    assert_eq!(report.applied, 99);
    let source = source(&reference, &device);
    let labels = rows(&reference["labels"]);
    let logits =
        |m: &Bert2Bert| values(m.decode(&m.encode(&source), m.shift_right(&labels, config.pad_token_id, &device)));
    assert_eq!(logits(&model), logits(&again));
}
