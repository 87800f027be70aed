//! Margins and temperatures on the scores' own scale (`"auto"`), measured before the first step.
//!
//! The hinge's margins `m` and `n` and the listwise temperatures are in units of the scores,
//! and those depend on the student, the corpus and the teacher: the reference's `m = 300`,
//! `n = 100` fit its BART-large students, while a MiniLM-size student's candidates differ by a
//! few points, so at 300 every pair stays violated and the hinge gives a constant push with no
//! ordering in it. `"auto"` measures the scale on lists sampled as the first step samples them,
//! with the student's scores as they are then (its retrieval scores) and the teacher's:
//!
//! | setting | `"auto"` |
//! |---|---|
//! | `margin` | the `margin_quantile` quantile (linear, as `numpy.quantile`) of `d_ij / (1 + (j-i-1) ρ)` over the pairs the student already orders as the loss's target does (`d_ij = s_i - s_j > 0`), `ρ = step_ratio`; with a given `n`: of `d_ij - (j-i-1) n` |
//! | `step_margin` | `step_ratio × m` |
//! | `student_temperature`, `teacher_temperature` | the median gap between neighbouring entries of a list (its scores sorted; ties left out) over all lists |
//!
//! So at the first step every pair the student orders against the target is violated, and of
//! the pairs it already orders right a `margin_quantile` share is still inside the margin: the
//! hinge selects, whatever the score scale. For the temperatures, neighbours of a list differ
//! by about one unit of log-probability in both softmaxes, whether the teacher gives cosines
//! or logits. `scripts/fixtures/make_loss_scale_fixtures.py` computes the same in numpy.

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::TrainError;
use crate::rank_loss::{RankLoss, RankLossConfig, stated_pairs, target_order};

/// A margin or temperature as configured: a number on the scores' scale, or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreScale {
    Given(f64),
    Auto,
}

impl ScoreScale {
    pub fn given(self) -> Option<f64> {
        match self {
            ScoreScale::Given(value) => Some(value),
            ScoreScale::Auto => None,
        }
    }
}

impl Serialize for ScoreScale {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ScoreScale::Given(value) => serializer.serialize_f64(*value),
            ScoreScale::Auto => serializer.serialize_str("auto"),
        }
    }
}

/// Numbers (also as strings, as environment variables give them, `"1e-5"` included) and
/// `"auto"`; anything else, and a negative or non-finite number, is refused.
impl<'de> Deserialize<'de> for ScoreScale {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScaleVisitor;
        impl Visitor<'_> for ScaleVisitor {
            type Value = ScoreScale;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative number or \"auto\"")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ScoreScale, E> {
                if value.is_finite() && value >= 0.0 {
                    Ok(ScoreScale::Given(value))
                } else {
                    Err(E::invalid_value(Unexpected::Float(value), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ScoreScale, E> {
                if value >= 0 {
                    Ok(ScoreScale::Given(value as f64))
                } else {
                    Err(E::invalid_value(Unexpected::Signed(value), &self))
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ScoreScale, E> {
                Ok(ScoreScale::Given(value as f64))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ScoreScale, E> {
                if value.trim() == "auto" {
                    return Ok(ScoreScale::Auto);
                }
                match value.trim().parse::<f64>() {
                    Ok(number) => self.visit_f64(number),
                    Err(_) => Err(E::invalid_value(Unexpected::Str(value), &self)),
                }
            }
        }
        deserializer.deserialize_any(ScaleVisitor)
    }
}

/// How `"auto"` scales are measured (`[train_distill.loss.auto]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoScaleConfig {
    /// Share of the pairs the student already orders right that the margins leave violated at
    /// the first step (the quantile `m` is taken at). 0.15 was chosen on wiki-vital's dev split
    /// among 0.1 to 0.25 (docs/benchmarks.md).
    pub margin_quantile: f64,
    /// `ρ`: the step margin as a multiple of the margin (the reference's is 100 / 300).
    pub step_ratio: f64,
}

impl Default for AutoScaleConfig {
    fn default() -> Self {
        AutoScaleConfig { margin_quantile: 0.15, step_ratio: 0.4 }
    }
}

/// A list as the first step's loss sees it, in candidate order: the student's scores (its
/// retrieval scores then), the teacher's, and where the labelled positive is.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredList {
    pub student: Vec<f64>,
    pub teacher: Vec<f64>,
    pub positive: usize,
}

/// What the measurement saw, for the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleMeasurement {
    pub lists: usize,
    /// Pairs of the target order the teacher states (as the step log's `agreement` counts them).
    pub pairs: usize,
    /// Of those, the ones the student already orders right.
    pub agreeing: usize,
}

/// The `q` quantile of `values` with linear interpolation between order statistics (numpy's
/// default); `None` for no values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64))
}

/// `"auto"` margin and step margin from the student's gaps on its agreeing pairs (module docs).
fn margins(
    config: &RankLossConfig,
    lists: &[ScoredList],
    measurement: &mut ScaleMeasurement,
) -> Result<(f64, f64), TrainError> {
    let ratio = config.auto.step_ratio;
    let mut reduced = Vec::new();
    for list in lists {
        let order = target_order(&list.teacher, list.positive, config.kind);
        let teacher: Vec<f64> = order.iter().map(|&i| list.teacher[i]).collect();
        for (i, j) in stated_pairs(&teacher, config.kind) {
            measurement.pairs += 1;
            let gap = list.student[order[i]] - list.student[order[j]];
            if gap > 0.0 {
                measurement.agreeing += 1;
                let extra = (j - i - 1) as f64;
                reduced.push(match config.step_margin {
                    ScoreScale::Given(n) => gap - extra * n,
                    ScoreScale::Auto => gap / (1.0 + extra * ratio),
                });
            }
        }
    }
    let margin = match config.margin {
        ScoreScale::Given(m) => m,
        ScoreScale::Auto => quantile(&reduced, config.auto.margin_quantile).map(|m| m.max(0.0)).ok_or_else(|| {
            TrainError::NoData(format!(
                "train_distill.loss.margin = \"auto\" is measured on the pairs the student already orders as the \
                 teacher does, and it orders none of the {} pairs of {} lists so: give the margin a number",
                measurement.pairs, measurement.lists
            ))
        })?,
    };
    let step_margin = config.step_margin.given().unwrap_or(ratio * margin);
    Ok((margin, step_margin))
}

/// The median gap between neighbouring scores of each list, over all lists (ties left out).
pub fn neighbour_gap<'a>(lists: impl IntoIterator<Item = &'a [f64]>) -> Option<f64> {
    let mut gaps = Vec::new();
    for scores in lists {
        let mut sorted: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        gaps.extend(sorted.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > 0.0));
    }
    quantile(&gaps, 0.5)
}

fn temperature<'a>(
    scale: ScoreScale,
    which: &str,
    scores: impl IntoIterator<Item = &'a [f64]>,
) -> Result<f64, TrainError> {
    match scale {
        ScoreScale::Given(value) => Ok(value),
        ScoreScale::Auto => neighbour_gap(scores).ok_or_else(|| {
            TrainError::NoData(format!(
                "train_distill.loss.{which}_temperature = \"auto\" is the median gap between neighbouring {which} \
                 scores, and every list's scores are tied: give it a number"
            ))
        }),
    }
}

impl RankLossConfig {
    /// Whether some setting is `"auto"`.
    pub fn measures(&self) -> bool {
        [self.margin, self.step_margin, self.student_temperature, self.teacher_temperature].contains(&ScoreScale::Auto)
    }

    /// The loss with every `"auto"` setting measured on `lists`; given numbers are kept.
    pub fn resolve(&self, lists: &[ScoredList]) -> Result<(RankLoss, ScaleMeasurement), TrainError> {
        let mut measurement = ScaleMeasurement { lists: lists.len(), ..ScaleMeasurement::default() };
        let (margin, step_margin) = margins(self, lists, &mut measurement)?;
        let student = lists.iter().map(|l| l.student.as_slice());
        let teacher = lists.iter().map(|l| l.teacher.as_slice());
        let loss = RankLoss {
            kind: self.kind,
            margin,
            step_margin,
            positive_weight: self.positive_weight,
            student_temperature: temperature(self.student_temperature, "student", student)?,
            teacher_temperature: temperature(self.teacher_temperature, "teacher", teacher)?,
        };
        Ok((loss, measurement))
    }

    /// The loss with `"auto"` settings taken from `stored` (what a run resolved at its first
    /// step, kept in its checkpoints) and given numbers from this configuration.
    pub fn with_stored(&self, stored: &RankLoss) -> RankLoss {
        let pick = |scale: ScoreScale, stored: f64| scale.given().unwrap_or(stored);
        RankLoss {
            kind: self.kind,
            margin: pick(self.margin, stored.margin),
            step_margin: match (self.margin, self.step_margin) {
                (_, ScoreScale::Given(n)) => n,
                // A given margin with an automatic step margin scales with that margin.
                (ScoreScale::Given(m), ScoreScale::Auto) => self.auto.step_ratio * m,
                (ScoreScale::Auto, ScoreScale::Auto) => stored.step_margin,
            },
            positive_weight: self.positive_weight,
            student_temperature: pick(self.student_temperature, stored.student_temperature),
            teacher_temperature: pick(self.teacher_temperature, stored.teacher_temperature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ScoreScale, quantile};

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.25), Some(1.75));
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn scales_read_numbers_numeric_strings_and_auto_and_refuse_the_rest() {
        let read = |text: &str| serde_json::from_str::<ScoreScale>(text).map_err(|e| e.to_string());
        assert_eq!(read("20"), Ok(ScoreScale::Given(20.0)));
        assert_eq!(read("2.5"), Ok(ScoreScale::Given(2.5)));
        assert_eq!(read("\"1e-5\""), Ok(ScoreScale::Given(1e-5)));
        assert_eq!(read("\"auto\""), Ok(ScoreScale::Auto));
        for bad in ["\"big\"", "-3", "-0.5", "true"] {
            let error = read(bad).unwrap_err();
            assert!(error.contains("a non-negative number or \"auto\""), "{bad}: {error}");
        }
        assert_eq!(serde_json::to_string(&ScoreScale::Auto).unwrap(), "\"auto\"");
        assert_eq!(serde_json::to_string(&ScoreScale::Given(3.0)).unwrap(), "3.0");
    }
}
