//! Helpers shared by the model tests: fixture reading and tensor comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use dgr_model::seq2seq::{EncoderDecoder, Source};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn model_fixture(name: &str) -> (PathBuf, serde_json::Value) {
    let dir = root().join("tests/fixtures/models").join(name);
    let reference = json(&dir.join("reference.json"));
    (dir, reference)
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// All numbers of a nested JSON array, flattened.
pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

pub fn rows(value: &serde_json::Value) -> Vec<Vec<i64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
        .collect()
}

pub fn int_tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let shape = [rows.len(), rows[0].len()];
    Tensor::from_data(TensorData::new(rows.concat(), shape), device)
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `‖ours − theirs‖ / ‖theirs‖`.
pub fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let diff: f32 = ours.iter().zip(theirs).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
    let norm: f32 = theirs.iter().map(|b| b * b).sum::<f32>().sqrt();
    diff / norm
}

/// Rows of `values` (`width` numbers each) where `mask` is non-zero: the real, unpadded positions.
pub fn unpadded(values: &[f32], mask: &[Vec<i64>]) -> Vec<f32> {
    let flat: Vec<i64> = mask.concat();
    let width = values.len() / flat.len();
    values.chunks(width).zip(&flat).filter(|(_, m)| **m != 0).flat_map(|(c, _)| c.to_vec()).collect()
}

/// The source batch of a seq2seq fixture.
pub fn source(reference: &serde_json::Value, device: &Device) -> Source {
    Source {
        ids: int_tensor(&rows(&reference["input_ids"]), device),
        mask: int_tensor(&rows(&reference["attention_mask"]), device),
    }
}

/// Checks a student against a seq2seq fixture's reference (made by
/// scripts/fixtures/make_model_fixtures.py): encoder states at real positions, teacher-forced
/// logits, and the NLL and label-smoothed losses, each within 1e-4.
pub fn assert_forward_matches(model: &impl EncoderDecoder, reference: &serde_json::Value, pad: u32, device: &Device) {
    let source = source(reference, device);
    let encoded = model.encode(&source);
    let mask = rows(&reference["attention_mask"]);
    let diff = max_abs_diff(
        &unpadded(&values(encoded.states.clone()), &mask),
        &unpadded(&floats(&reference["encoder_last_hidden_state"]), &mask),
    );
    assert!(diff <= 1e-4, "encoder states differ by {diff}");

    let labels = rows(&reference["labels"]);
    let logits = values(model.decode(&encoded, model.shift_right(&labels, pad, device)));
    let diff = max_abs_diff(&logits, &floats(&reference["logits"]));
    assert!(diff <= 1e-4, "logits differ by {diff}");

    for (smoothing, key) in [(0.0, "loss_nll"), (0.1, "loss_label_smoothing_0.1")] {
        let ours = values(model.generation_loss(&source, &labels, pad, smoothing).loss)[0];
        let theirs = reference[key].as_f64().unwrap() as f32;
        assert!((ours - theirs).abs() <= 1e-4, "{key}: {ours} vs {theirs}");
    }

    // The detached measures: unsmoothed NLL whatever the smoothing, and the arg-max accuracy of
    // the reference logits over the real targets.
    let measured = model.generation_loss(&source, &labels, pad, 0.1);
    let nll = values(measured.nll)[0];
    let expected = reference["loss_nll"].as_f64().unwrap() as f32;
    assert!((nll - expected).abs() <= 1e-4, "nll {nll} vs {expected}");
    let reference_logits = floats(&reference["logits"]);
    let vocab = reference_logits.len() / labels.len() / labels[0].len();
    let (mut correct, mut total) = (0usize, 0usize);
    for (row, targets) in labels.iter().enumerate() {
        for (position, &target) in targets.iter().enumerate().filter(|(_, t)| **t >= 0) {
            let start = (row * targets.len() + position) * vocab;
            let scores = &reference_logits[start..start + vocab];
            let best = (0..vocab).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            correct += usize::from(best as i64 == target);
            total += 1;
        }
    }
    let accuracy = values(measured.accuracy)[0];
    assert!((accuracy - correct as f32 / total as f32).abs() <= 1e-6, "accuracy {accuracy} vs {correct}/{total}");
}

/// Checks the teacher-forced scores of the fixture's keys for its first query, within 1e-4.
pub fn assert_key_scores_match(model: &impl EncoderDecoder, reference: &serde_json::Value, device: &Device) {
    let full = source(reference, device);
    let width = full.ids.dims()[1];
    let first = Source { ids: full.ids.slice([0..1, 0..width]), mask: full.mask.slice([0..1, 0..width]) };
    let keys: Vec<Vec<u32>> = rows(&reference["keys"]).iter().map(|k| k.iter().map(|&t| t as u32).collect()).collect();
    let scores = values(model.score_keys(&model.encode(&first), &keys));
    let diff = max_abs_diff(&scores, &floats(&reference["key_scores"]));
    assert!(diff <= 1e-4, "key scores {scores:?} differ by {diff}");
}

/// Decoding one token at a time with the cache gives the teacher-forced logits, and a cache
/// reordered between steps (as beam search does) continues the reordered histories.
pub fn assert_incremental_decoding_matches(
    model: &impl EncoderDecoder,
    reference: &serde_json::Value,
    pad: u32,
    device: &Device,
) {
    let encoded = model.encode(&source(reference, device));
    let labels = rows(&reference["labels"]);
    let decoder_ids = model.shift_right(&labels, pad, device);
    let [batch, length] = decoder_ids.dims();
    let full = values(model.decode(&encoded, decoder_ids.clone()));
    let vocab = full.len() / (batch * length);

    let mut cache = model.start_decoding(&encoded);
    for t in 0..length {
        let tokens = decoder_ids.clone().slice([0..batch, t..t + 1]).reshape([batch]);
        let step = values(model.next_logits(&mut cache, tokens));
        for b in 0..batch {
            let expected = &full[(b * length + t) * vocab..(b * length + t + 1) * vocab];
            let diff = max_abs_diff(&step[b * vocab..(b + 1) * vocab], expected);
            assert!(diff <= 1e-4, "step {t}, beam {b}: differs by {diff}");
        }
    }
    assert_eq!(cache.length, length);

    // Swap the beams after two steps: the continuation must follow the swapped histories.
    let mut cache = model.start_decoding(&encoded);
    for t in 0..2 {
        let tokens = decoder_ids.clone().slice([0..batch, t..t + 1]).reshape([batch]);
        model.next_logits(&mut cache, tokens);
    }
    let swap = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), device);
    let mut swapped = cache.reorder(swap.clone());
    let next = decoder_ids.clone().slice([0..batch, 2..3]).reshape([batch]).select(0, swap);
    let step = values(model.next_logits(&mut swapped, next));
    for (row, original) in [(0, 1), (1, 0)] {
        let expected = &full[(original * length + 2) * vocab..(original * length + 3) * vocab];
        let diff = max_abs_diff(&step[row * vocab..(row + 1) * vocab], expected);
        assert!(diff <= 1e-4, "reordered row {row} differs by {diff}");
    }
}
