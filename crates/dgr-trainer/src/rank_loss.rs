//! The losses that make the student's passage scores respect the teacher (method §5): the
//! distilled RankNet of DGR and the variants its robustness study compares.
//!
//! A loss sees one query's list in *target order*: for the distilled RankNet the labelled
//! positive first and the others by teacher score (descending, ties in candidate order); for
//! every other loss all entries by teacher score. With `s` and `t` the student's and the
//! teacher's scores in that order:
//!
//! | kind | loss |
//! |---|---|
//! | `distilled-ranknet`, `teacher-order` | `h_ij = max(0, s_j - s_i + m + (j-i-1) n)`, `w_i = positive_weight` for `i = 0`, else `1/(i+1)`; the mean of `w_i h_ij` over the pairs where it is positive, 0 when none is |
//! | `logistic-ranknet` | mean over `i < j` with `t_i > t_j` of `softplus((s_j - s_i)/τs)` |
//! | `listnet` | `-Σ softmax(t/τt) · log_softmax(s/τs)` |
//! | `kl` | `Σ p (log p - log_softmax(s/τs))`, `p = softmax(t/τt)` |
//! | `lambda-loss` | `Σ_{i<j} ΔNDCG_ij · softplus(-(s_i - s_j)/τs) / ln 2`, LambdaRank weights over the student's current ranks (allRank's `lambdaLoss`) |
//!
//! `scripts/fixtures/make_rank_loss_fixtures.py` writes the same losses in PyTorch; the tests
//! hold values and gradients to them.

use burn::tensor::activation::{log_softmax, softplus};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::loss_scale::{AutoScaleConfig, ScoreScale};

/// Which loss ranks a query's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankLossKind {
    /// DGR's loss: margin hinge on the target order with the positive pinned first.
    DistilledRanknet,
    /// The same hinge on the teacher's order alone (the positive not pinned).
    TeacherOrder,
    /// Logistic RankNet on the teacher's order.
    LogisticRanknet,
    /// ListNet: cross-entropy of the student's softmax against the teacher's.
    Listnet,
    /// KL divergence from the teacher's softmax to the student's.
    Kl,
    /// LambdaLoss with LambdaRank (ΔNDCG) weights.
    LambdaLoss,
}

/// The settings of the ranking loss (`[train_distill.loss]`): margins and temperatures are
/// numbers on the scores' scale or `"auto"`, measured before the first step
/// ([`crate::loss_scale`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankLossConfig {
    pub kind: RankLossKind,
    /// `m`: the least gap between neighbours in the target order (hinge losses).
    pub margin: ScoreScale,
    /// `n`: extra gap per position between non-neighbours (hinge losses).
    pub step_margin: ScoreScale,
    /// `w_0`: weight of the pairs led by the first entry (the positive, when pinned).
    pub positive_weight: f64,
    /// Student scores are divided by this in the logistic, listwise and lambda losses.
    pub student_temperature: ScoreScale,
    /// Teacher scores are divided by this in `listnet` and `kl`.
    pub teacher_temperature: ScoreScale,
    /// How the `"auto"` settings are measured.
    #[serde(default)]
    pub auto: AutoScaleConfig,
}

impl Default for RankLossConfig {
    fn default() -> Self {
        RankLossConfig {
            kind: RankLossKind::DistilledRanknet,
            margin: ScoreScale::Auto,
            step_margin: ScoreScale::Auto,
            positive_weight: 3.0,
            student_temperature: ScoreScale::Auto,
            teacher_temperature: ScoreScale::Auto,
            auto: AutoScaleConfig::default(),
        }
    }
}

/// The ranking loss with every scale a number: what a run trains with, stored in its
/// checkpoints so that a resumed run keeps what its first step measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankLoss {
    pub kind: RankLossKind,
    pub margin: f64,
    pub step_margin: f64,
    pub positive_weight: f64,
    pub student_temperature: f64,
    pub teacher_temperature: f64,
}

impl RankLoss {
    /// The reference's hinge (method §5: m = 300, n = 100, w_0 = 3), temperatures 1.
    pub fn reference() -> Self {
        RankLoss {
            kind: RankLossKind::DistilledRanknet,
            margin: 300.0,
            step_margin: 100.0,
            positive_weight: 3.0,
            student_temperature: 1.0,
            teacher_temperature: 1.0,
        }
    }
}

/// One list's loss and what the step log reports of it.
#[derive(Debug, Clone)]
pub struct ListLoss {
    /// Differentiable, shape `[1]`.
    pub loss: Tensor<1>,
    /// Hinge losses: pairs with a positive weighted hinge (0 for the other kinds).
    pub violated: usize,
    /// Pairs `i < j` of the target order whose order the teacher states (`t_i > t_j`, or any
    /// pair when the positive is pinned and `i = 0`).
    pub pairs: usize,
    /// Of those pairs, how many the student already orders the same way (`s_i > s_j`).
    pub agreeing: usize,
}

/// The target order of a list given in candidate order: see the module documentation.
pub fn target_order(teacher: &[f64], positive: usize, kind: RankLossKind) -> Vec<usize> {
    let pinned = kind == RankLossKind::DistilledRanknet;
    let mut rest: Vec<usize> = (0..teacher.len()).filter(|&i| !(pinned && i == positive)).collect();
    rest.sort_by(|&a, &b| teacher[b].total_cmp(&teacher[a]).then(a.cmp(&b)));
    if pinned {
        rest.insert(0, positive);
    }
    rest
}

/// The pairs `i < j` of a list in target order (teacher scores `t` in that order) whose order
/// the target states: the teacher orders them (`t_i > t_j`), or the positive is pinned first
/// and `i = 0`. The step log's agreement and the `"auto"` margin count the same pairs.
pub fn stated_pairs(t: &[f64], kind: RankLossKind) -> Vec<(usize, usize)> {
    let pinned = kind == RankLossKind::DistilledRanknet;
    (0..t.len())
        .flat_map(|i| (i + 1..t.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| t[i] > t[j] || (pinned && i == 0))
        .collect()
}

/// The loss of one list. `scores` (`[n]`, differentiable) and `teacher` are in candidate order;
/// `positive` is the labelled positive's index there.
pub fn list_loss(scores: Tensor<1>, teacher: &[f64], positive: usize, config: &RankLoss) -> ListLoss {
    let device = scores.device();
    let order = target_order(teacher, positive, config.kind);
    let n = order.len();
    let s = pick(&scores, &order);
    let t: Vec<f64> = order.iter().map(|&i| teacher[i]).collect();
    let values = host(&s);
    let stated = stated_pairs(&t, config.kind);
    let pairs = stated.len();
    let agreeing = stated.iter().filter(|&&(i, j)| values[i] > values[j]).count();
    let zero = || s.clone().sum() * 0.0;
    let (loss, violated) = match config.kind {
        RankLossKind::DistilledRanknet | RankLossKind::TeacherOrder => hinge(&s, config),
        RankLossKind::LogisticRanknet => {
            let (i, j): (Vec<usize>, Vec<usize>) =
                (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).filter(|&(i, j)| t[i] > t[j]).unzip();
            let loss = if i.is_empty() {
                zero()
            } else {
                let diff = (pick(&s, &j) - pick(&s, &i)) / config.student_temperature;
                softplus(diff, 1.0).mean()
            };
            (loss, 0)
        }
        RankLossKind::Listnet | RankLossKind::Kl => {
            let teacher = Tensor::<1>::from_data(TensorData::new(to_f32(&t), [n]), &device);
            let log_p = log_softmax(teacher / config.teacher_temperature, 0);
            let p = log_p.clone().exp();
            let log_q = log_softmax(s.clone() / config.student_temperature, 0);
            let loss =
                if config.kind == RankLossKind::Kl { (p.clone() * (log_p - log_q)).sum() } else { -(p * log_q).sum() };
            (loss, 0)
        }
        RankLossKind::LambdaLoss => (lambda_loss(&s, &values, config), 0),
    };
    ListLoss { loss, violated, pairs, agreeing }
}

/// The margin hinge of the distilled RankNet over a list in target order, and its violated
/// pairs (mean over those; 0 when there are none, where the reference divides by zero).
fn hinge(s: &Tensor<1>, config: &RankLoss) -> (Tensor<1>, usize) {
    let n = s.dims()[0];
    let device = s.device();
    let (mut first, mut second, mut margins, mut weights) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let weight = if i == 0 { config.positive_weight } else { 1.0 / (i + 1) as f64 };
        for j in i + 1..n {
            first.push(i);
            second.push(j);
            margins.push(config.margin + (j - i - 1) as f64 * config.step_margin);
            weights.push(weight);
        }
    }
    if first.is_empty() {
        return (s.clone().sum() * 0.0, 0);
    }
    let count = first.len();
    let constant = |v: &[f64]| Tensor::<1>::from_data(TensorData::new(to_f32(v), [count]), &device);
    // max(0, x) with the gradient of a pair that is not violated 0, also at x = 0 exactly (a
    // tie is no violation), as in PyTorch.
    let x = pick(s, &second) - pick(s, &first) + constant(&margins);
    let violated_mask = x.clone().detach().greater_elem(0.0).float();
    let terms = x * violated_mask * constant(&weights);
    let violated = host(&terms).iter().filter(|&&v| v > 0.0).count();
    if violated == 0 {
        return (s.clone().sum() * 0.0, 0);
    }
    (terms.sum() / violated as f64, violated)
}

/// LambdaLoss with LambdaRank weights: graded relevance `n - 1 - i` by target position, gains
/// normalised by the ideal DCG, discounts at the student's current ranks (ties by position).
fn lambda_loss(s: &Tensor<1>, values: &[f32], config: &RankLoss) -> Tensor<1> {
    let n = values.len();
    let device = s.device();
    let grade = |i: usize| (n - 1 - i) as i32;
    let ideal: f64 = (0..n).map(|i| (2f64.powi(grade(i)) - 1.0) / (2.0 + i as f64).log2()).sum();
    let gain = |i: usize| (2f64.powi(grade(i)) - 1.0) / ideal;
    let mut by_score: Vec<usize> = (0..n).collect();
    by_score.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut discount = vec![0.0; n];
    for (rank, &i) in by_score.iter().enumerate() {
        discount[i] = (2.0 + rank as f64).log2();
    }
    let (mut first, mut second, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            first.push(i);
            second.push(j);
            deltas.push((1.0 / discount[i] - 1.0 / discount[j]).abs() * (gain(i) - gain(j)).abs());
        }
    }
    if first.is_empty() || ideal <= 0.0 {
        return s.clone().sum() * 0.0;
    }
    let count = first.len();
    let delta = Tensor::<1>::from_data(TensorData::new(to_f32(&deltas), [count]), &device);
    let diff = (pick(s, &first) - pick(s, &second)) / config.student_temperature;
    (delta * softplus(-diff, 1.0)).sum() / std::f64::consts::LN_2
}

/// `s[positions]` (positions may repeat).
pub(crate) fn pick(s: &Tensor<1>, positions: &[usize]) -> Tensor<1> {
    let index: Vec<i64> = positions.iter().map(|&i| i as i64).collect();
    let count = index.len();
    s.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(index, [count]), &s.device()))
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// The values of a small tensor, detached (loss bookkeeping; empty if it cannot be read).
fn host(t: &Tensor<1>) -> Vec<f32> {
    t.clone().detach().into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}
