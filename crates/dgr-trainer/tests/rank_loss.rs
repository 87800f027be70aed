//! The stage-2 ranking losses against their PyTorch transcription
//! (scripts/fixtures/make_rank_loss_fixtures.py → tests/fixtures/rank-loss/cases.json): values,
//! gradients in the student's scores and violated pairs, for every loss kind, including lists
//! without a violated pair, ties in teacher scores, fewer than five candidates and a positive
//! the student already ranks first.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use dgr_trainer::rank_loss::{RankLoss, RankLossKind, list_loss, target_order};

fn cases() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rank-loss/cases.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["cases"].as_array().unwrap().clone()
}

fn floats(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn config(case: &serde_json::Value) -> RankLoss {
    let c = &case["config"];
    let kind: RankLossKind = serde_json::from_value(case["kind"].clone()).unwrap();
    RankLoss {
        kind,
        margin: c["margin"].as_f64().unwrap(),
        step_margin: c["step_margin"].as_f64().unwrap(),
        positive_weight: c["positive_weight"].as_f64().unwrap(),
        student_temperature: c["student_temperature"].as_f64().unwrap(),
        teacher_temperature: c["teacher_temperature"].as_f64().unwrap(),
    }
}

/// Within 1e-5 of the reference, relative to its magnitude (scores are in the hundreds and
/// computed in f32).
fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0)
}

#[test]
fn every_loss_matches_pytorch_in_value_and_gradient() {
    let cases = cases();
    assert!(cases.len() >= 60);
    let device = Device::flex().autodiff();
    let mut kinds = std::collections::BTreeSet::new();
    for case in &cases {
        let name = format!("{} / {}", case["name"], case["kind"]);
        let config = config(case);
        kinds.insert(format!("{:?}", config.kind));
        let scores = floats(&case["scores"]);
        let teacher = floats(&case["teacher"]);
        let positive = case["positive"].as_u64().unwrap() as usize;
        let order: Vec<usize> =
            case["order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(target_order(&teacher, positive, config.kind), order, "{name}: target order");

        let n = scores.len();
        let s =
            Tensor::<1>::from_data(TensorData::new(scores.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n]), &device)
                .require_grad();
        let result = list_loss(s.clone(), &teacher, positive, &config);
        let value = f64::from(result.loss.clone().into_scalar::<f32>());
        let expected = case["loss"].as_f64().unwrap();
        assert!(close(value, expected), "{name}: loss {value} vs {expected}");
        if let Some(violated) = case.get("violated") {
            assert_eq!(result.violated as u64, violated.as_u64().unwrap(), "{name}: violated pairs");
        }
        let grads = result.loss.backward();
        let grad: Vec<f32> = s.grad(&grads).unwrap().into_data().try_into_vec::<f32>().unwrap();
        for (i, (&ours, theirs)) in grad.iter().zip(floats(&case["grad"])).enumerate() {
            assert!(close(f64::from(ours), theirs), "{name}: d loss / d s[{i}] {ours} vs {theirs}");
        }
        assert!(result.agreeing <= result.pairs, "{name}");
    }
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}

#[test]
fn a_list_the_student_already_orders_has_no_violated_pair_and_zero_loss() {
    let device = Device::flex().autodiff();
    let scores = Tensor::<1>::from_data(TensorData::new(vec![5000f32, 4000.0, 3000.0, 2000.0, 1000.0], [5]), &device);
    let teacher = [0.9, 0.8, 0.7, 0.6, 0.5];
    let result = list_loss(scores, &teacher, 0, &RankLoss::reference());
    assert_eq!(result.violated, 0);
    assert_eq!(result.loss.into_scalar::<f32>(), 0.0);
    assert_eq!((result.pairs, result.agreeing), (10, 10), "the student agrees with every stated pair");
}
