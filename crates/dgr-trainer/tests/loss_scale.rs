//! The `"auto"` margins and temperatures of the stage-2 loss against their numpy transcription
//! (scripts/fixtures/make_loss_scale_fixtures.py → tests/fixtures/rank-loss/scales.json), on a
//! small fixed set of lists; and what a resumed run takes from its checkpoint.

use std::path::Path;

use dgr_trainer::loss_scale::{ScoreScale, ScoredList};
use dgr_trainer::rank_loss::{RankLoss, RankLossConfig, RankLossKind};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rank-loss/scales.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn lists(fixture: &serde_json::Value) -> Vec<ScoredList> {
    fixture["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| ScoredList {
            student: floats(&l["student"]),
            teacher: floats(&l["teacher"]),
            positive: l["positive"].as_u64().unwrap() as usize,
        })
        .collect()
}

/// The case's configuration as a `[train_distill.loss]` section would give it.
fn config(case: &serde_json::Value) -> RankLossConfig {
    let c = &case["config"];
    serde_json::from_value(serde_json::json!({
        "kind": c["kind"],
        "margin": c["margin"],
        "step_margin": c["step_margin"],
        "positive_weight": 3.0,
        "student_temperature": "auto",
        "teacher_temperature": "auto",
        "auto": { "margin_quantile": c["margin_quantile"], "step_ratio": c["step_ratio"] },
    }))
    .unwrap()
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0)
}

#[test]
fn auto_margins_and_temperatures_equal_the_formula() {
    let fixture = fixture();
    let lists = lists(&fixture);
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = &case["config"]["name"];
        let (loss, measurement) = config(case).resolve(&lists).unwrap();
        for (ours, key) in [
            (loss.margin, "margin"),
            (loss.step_margin, "step_margin"),
            (loss.student_temperature, "student_temperature"),
            (loss.teacher_temperature, "teacher_temperature"),
        ] {
            let theirs = case[key].as_f64().unwrap();
            assert!(close(ours, theirs), "{name}: {key} {ours}, numpy {theirs}");
        }
        assert_eq!(measurement.lists, lists.len(), "{name}");
        assert_eq!(measurement.pairs as u64, case["pairs"].as_u64().unwrap(), "{name}: stated pairs");
        assert_eq!(measurement.agreeing as u64, case["agreeing"].as_u64().unwrap(), "{name}: agreeing pairs");
    }
}

#[test]
fn a_student_that_agrees_with_no_pair_cannot_measure_a_margin_but_a_given_one_is_kept() {
    let list = ScoredList { student: vec![1.0, 2.0, 3.0], teacher: vec![0.9, 0.8, 0.7], positive: 0 };
    let auto = RankLossConfig::default();
    let error = auto.resolve(std::slice::from_ref(&list)).unwrap_err().to_string();
    assert!(error.contains("train_distill.loss.margin") && error.contains("give the margin a number"), "{error}");
    let given = RankLossConfig { margin: ScoreScale::Given(300.0), step_margin: ScoreScale::Given(100.0), ..auto };
    let (loss, _) = given.resolve(&[list]).unwrap();
    assert_eq!((loss.margin, loss.step_margin), (300.0, 100.0));
}

#[test]
fn a_resumed_run_takes_its_auto_settings_from_the_checkpoint_and_given_ones_from_the_configuration() {
    let stored = RankLoss {
        kind: RankLossKind::DistilledRanknet,
        margin: 21.5,
        step_margin: 8.6,
        positive_weight: 3.0,
        student_temperature: 4.25,
        teacher_temperature: 0.0125,
    };
    let auto = RankLossConfig::default();
    assert_eq!(auto.with_stored(&stored), stored);
    let some_given = RankLossConfig { teacher_temperature: ScoreScale::Given(0.05), ..RankLossConfig::default() };
    assert_eq!(some_given.with_stored(&stored), RankLoss { teacher_temperature: 0.05, ..stored.clone() });
    // A given margin with an automatic step margin: the step margin follows the given one.
    let given_margin = RankLossConfig { margin: ScoreScale::Given(10.0), ..RankLossConfig::default() };
    assert_eq!(given_margin.with_stored(&stored), RankLoss { margin: 10.0, step_margin: 4.0, ..stored });
}
