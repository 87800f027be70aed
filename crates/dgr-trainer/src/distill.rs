//! Stage 2 (DGR, method §4–5): the student's own passage scores are trained to respect the
//! teacher's order of its candidates.
//!
//! - [`DistillData`]: the training queries kept by the filter of §5 (a positive among the
//!   teacher-ranked candidates, more than `min_negatives` negatives, and a stage-1 score of the
//!   top positive not already a margin above the top negative), each with its positives, its
//!   stage-1 top negative, a pool of negatives drawn once (seeded), and every passage's keys;
//!   and the ranking loss with its `"auto"` margins and temperatures measured on the queries
//!   that pass the first two filters ([`crate::loss_scale`]), before the margin filters them.
//! - [`DistillObjective`]: per query and step, the lists `[pos0, n1..n4]` and `[posR, n1..n4]`
//!   (`n1` the stage-1 top negative, three more drawn from the pool), the student's score of
//!   each passage from its top `keys_per_passage` keys, the ranking loss of both lists
//!   ([`crate::rank_loss`]) and `lambda` × the generation loss of pos0's title and a span of it.
//!
//! A passage's student score is what `dgr retrieve` gives it from the same keys (§4): every key
//! is scored by teacher forcing under its own view's prompt, weighed by
//! [`dgr_index::evidence::weight_and_slope`] (the function retrieval weighs keys with) and scaled
//! by the coverage factor the passage gave it at retrieval (a constant here, as counts and N).
//! The score is assembled as `Σ c_k (w_k + w'_k (lp_k - lp_k⁰))` at the current log-probs
//! `lp_k⁰`: its value is exactly the retrieval score and its gradient exactly `Σ c_k w'_k ∂lp_k`.

use std::collections::{BTreeMap, HashMap};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use dgr_core::candidates::QueryCandidates;
use dgr_core::rank_lists::RankList;
use dgr_core::views::View;
use dgr_core::{Passage, Query};
use dgr_index::evidence::{KeySource, ScoringConfig, weight_and_slope};
use dgr_model::seq2seq::{Encoded as EncodedSource, EncoderDecoder, Source, token_cross_entropy};
use dgr_model::student::Student;
use dgr_model::tokenizer::{TextTokenizer, batch};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::engine::{Example, FixedMeasure, LOSS_SCALES, Loss, NEGATIVE_POOLS, Objective, TrainError, stream};
use crate::loss_scale::{ScaleMeasurement, ScoredList};
use crate::pairs::{PairConfig, sample_spans};
use crate::rank_loss::{ListLoss, RankLoss, RankLossConfig, list_loss, pick};

/// How pseudo-query keys count in a passage's student score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PseudoQueryKeys {
    /// Teacher-forced under the pseudo-query prompt, like every other view.
    Score,
    /// Left out of the score.
    Skip,
}

impl PseudoQueryKeys {
    /// Whether a key of `view` counts in a passage's student score.
    fn counts(self, view: View) -> bool {
        self == PseudoQueryKeys::Score || view != View::PseudoQuery
    }
}

/// Stage 2 (`dgr train-distill`, `[train_distill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The stage-1 student (a BERT2BERT or BART directory). Empty: the job's `stage1/weights/final`.
    pub student: std::path::PathBuf,
    /// Weight of the generation loss (λ).
    pub lambda: f64,
    /// A passage's score counts its best keys, this many at most.
    pub keys_per_passage: usize,
    /// Queries need more negatives than this among their teacher-ranked candidates.
    pub min_negatives: usize,
    /// Negatives drawn once per query; each step takes `sampled_negatives` of them.
    pub negative_pool: usize,
    pub sampled_negatives: usize,
    pub pseudo_query_keys: PseudoQueryKeys,
    pub label_smoothing: f64,
    /// Words of the body span whose generation loss is added.
    pub span_words: usize,
    /// Train on at most this many of the kept queries (0 = all).
    pub max_queries: usize,
    pub max_source_tokens: usize,
    pub max_target_tokens: usize,
    pub loss: RankLossConfig,
    pub engine: crate::engine::EngineConfig,
}

/// The prompts a query is encoded under, in row order; the pseudo-query row only when needed.
const PROMPTS: [View; 3] = [View::Title, View::Body, View::PseudoQuery];

/// A key of a passage with what its weight needs besides the student's log-probability.
#[derive(Debug, Clone, PartialEq)]
struct PassageKey {
    /// Index into the query's keys.
    key: usize,
    /// What the key added to the passage's score at retrieval.
    retrieval_score: f64,
    /// The coverage factor the key had in this passage at retrieval.
    coverage: f64,
}

/// A key of a query, ready to teacher-force.
#[derive(Debug, Clone, PartialEq)]
struct QueryKey {
    /// The tokens the student generates (markers forced at decoding left out).
    tokens: Vec<u32>,
    view: View,
    count: u64,
    /// 1 for unigram keys (their weight is the clamped log-odds), else the configured power.
    exponent: f64,
    /// The key source's factor (`[retrieve.scoring.source_weights]`).
    scale: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct DistillPassage {
    teacher_score: f64,
    keys: Vec<PassageKey>,
}

/// One kept training query.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillQuery {
    pub query_id: String,
    text: String,
    keys: Vec<QueryKey>,
    /// Positives in candidate order, pos0 first.
    positives: Vec<DistillPassage>,
    /// The stage-1 top negative.
    top_negative: DistillPassage,
    /// The negatives drawn once (the pool).
    pool: Vec<DistillPassage>,
    /// pos0's title and text (generation targets).
    title: String,
    body: String,
    /// The lists its first step draws: where `"auto"` measures, and the fixed lists of
    /// [`DistillObjective::fixed_measure`].
    first_draw: Draw,
}

/// A step's draw for a query: the lists `[pos0, negatives]` and `[posR, negatives]`, the
/// negatives being the stage-1 top one and `sampled_negatives` of the pool.
#[derive(Debug, Clone, PartialEq)]
struct Draw {
    /// posR's index among the positives.
    positive: usize,
    /// Pool indices of the sampled negatives.
    negatives: Vec<usize>,
}

impl Draw {
    /// Draws from `rng` as a step does.
    fn random(rng: &mut StdRng, positives: usize, pool: usize, sampled_negatives: usize) -> Draw {
        let positive = rng.random_range(0..positives);
        let negatives = sample(rng, pool, sampled_negatives.min(pool)).into_vec();
        Draw { positive, negatives }
    }
}

/// The passages of a draw's two lists, each once (pos0, posR unless it is pos0, the
/// negatives), and each list as positions among them, its positive first.
struct DrawnLists<'q> {
    passages: Vec<&'q DistillPassage>,
    lists: [Vec<usize>; 2],
}

impl DistillQuery {
    fn lists(&self, draw: &Draw) -> DrawnLists<'_> {
        let mut passages: Vec<&DistillPassage> = vec![&self.positives[0]];
        if draw.positive != 0 {
            passages.push(&self.positives[draw.positive]);
        }
        let first_negative = passages.len();
        passages.push(&self.top_negative);
        passages.extend(draw.negatives.iter().map(|&i| &self.pool[i]));
        let negatives = first_negative..passages.len();
        let list = |positive: usize| std::iter::once(positive).chain(negatives.clone()).collect::<Vec<usize>>();
        let lists = [list(0), list(first_negative - 1)];
        DrawnLists { passages, lists }
    }
}

/// Why queries were left out, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterCounts {
    pub queries: usize,
    pub kept: usize,
    pub no_positive: usize,
    pub too_few_negatives: usize,
    /// Stage 1 already puts pos0 a margin above the top negative.
    pub already_separated: usize,
}

/// Where the ranking loss's scales come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum ScaleSource {
    /// Every margin and temperature is a number of the configuration.
    Given,
    /// `"auto"` settings measured now, before the first step.
    Measured(ScaleMeasurement),
    /// `"auto"` settings as the run's checkpoint stored them (measured when it started).
    Checkpoint,
}

/// The stage-2 training queries, the ranking loss they train with, and what their key weights
/// need besides the student: the scoring settings and N they were checked against.
#[derive(Debug, Clone)]
pub struct DistillData {
    pub queries: Vec<DistillQuery>,
    pub counts: FilterCounts,
    /// The loss with every scale a number.
    pub loss: RankLoss,
    pub scale_source: ScaleSource,
    scoring: ScoringConfig,
    total_tokens: u64,
}

/// What stage 2 is made from: the dataset's train queries and corpus, the candidates with their
/// keys and the teacher's rank lists, and what the index says about keys.
#[derive(Clone, Copy)]
pub struct DistillInputs<'a> {
    pub queries: &'a [Query],
    pub corpus: &'a [Passage],
    pub candidates: &'a [QueryCandidates],
    pub rank_lists: &'a [RankList],
    pub markers: &'a Markers,
    /// The retrieval settings the candidates were weighed with.
    pub scoring: &'a ScoringConfig,
    /// Tokens in the index (N of the key weights).
    pub total_tokens: u64,
}

/// Token ids behind the markers of the index layout.
#[derive(Debug, Clone)]
pub struct Markers {
    /// `||`, forced before pseudo-query keys at decoding.
    pub pseudo_query: Vec<u32>,
}

/// A query that passes the filters the margin is not part of.
struct Eligible {
    query: DistillQuery,
    /// Stage 1's score of pos0 minus that of the top negative.
    separation: f64,
}

impl DistillData {
    /// Joins rank lists (teacher order, labels) with candidates (keys) and the dataset (texts)
    /// and keeps the queries §5 trains on. Rank lists must come from these candidates: every
    /// ranked passage must be a candidate of its query. `"auto"` scales of the loss come from
    /// `stored` when given (a resumed run's), else they are measured here.
    pub fn new(
        inputs: &DistillInputs,
        settings: &DistillConfig,
        stored: Option<&RankLoss>,
    ) -> Result<Self, TrainError> {
        let DistillInputs { queries, corpus, candidates, rank_lists, markers, scoring, total_tokens } = *inputs;
        let queries: HashMap<&str, &Query> = queries.iter().map(|q| (q.id.as_str(), q)).collect();
        let passages: HashMap<&str, &Passage> = corpus.iter().map(|p| (p.id.as_str(), p)).collect();
        let by_query: HashMap<&str, &QueryCandidates> = candidates.iter().map(|c| (c.query_id.as_str(), c)).collect();
        let mut counts = FilterCounts { queries: rank_lists.len(), ..FilterCounts::default() };
        let mut eligible = Vec::new();
        for (row, list) in rank_lists.iter().enumerate() {
            let Some(found) = by_query.get(list.query_id.as_str()) else {
                return Err(TrainError::Input(format!(
                    "rank list {row} (query {}) has no candidates: the rank lists were made from other candidates",
                    list.query_id
                )));
            };
            let query = queries.get(list.query_id.as_str()).ok_or_else(|| {
                TrainError::Input(format!(
                    "query {} of the rank lists is not a train query of the dataset",
                    list.query_id
                ))
            })?;
            let positives: Vec<usize> = (0..list.passage_ids.len()).filter(|&i| list.labels[i] > 0).collect();
            let negatives: Vec<usize> = (0..list.passage_ids.len()).filter(|&i| list.labels[i] <= 0).collect();
            if positives.is_empty() {
                counts.no_positive += 1;
                continue;
            }
            if negatives.len() <= settings.min_negatives {
                counts.too_few_negatives += 1;
                continue;
            }
            let (pos0, neg0) = (positives[0], negatives[0]);
            let keys = query_keys(found, markers, scoring, total_tokens)?;
            let passage = |i: usize| distill_passage(found, list, i, &keys, settings.keys_per_passage);
            let others: Vec<usize> = negatives[1..].to_vec();
            let mut rng = stream(settings.engine.seed, NEGATIVE_POOLS, row as u64);
            let pool_size = settings.negative_pool.min(others.len());
            let mut pool: Vec<usize> =
                sample(&mut rng, others.len(), pool_size).into_iter().map(|i| others[i]).collect();
            pool.sort_unstable();
            let Some(target) = passages.get(list.passage_ids[pos0].as_str()) else {
                return Err(TrainError::Input(format!(
                    "passage {} (a positive of query {}) is not in the corpus",
                    list.passage_ids[pos0], list.query_id
                )));
            };
            let mut first = stream(settings.engine.seed, LOSS_SCALES, row as u64);
            let first_draw = Draw::random(&mut first, positives.len(), pool.len(), settings.sampled_negatives);
            let query = DistillQuery {
                query_id: list.query_id.clone(),
                text: query.text.clone(),
                positives: positives.iter().map(|&i| passage(i)).collect::<Result<_, _>>()?,
                top_negative: passage(neg0)?,
                pool: pool.iter().map(|&i| passage(i)).collect::<Result<_, _>>()?,
                keys,
                title: target.title.clone(),
                body: target.text.clone(),
                first_draw,
            };
            let separation = list.candidate_scores[pos0] - list.candidate_scores[neg0];
            eligible.push(Eligible { query, separation });
        }

        if eligible.is_empty() {
            return Err(nothing_passes(&counts, settings, None));
        }
        let (loss, scale_source) = match stored {
            Some(stored) if settings.loss.measures() => (settings.loss.with_stored(stored), ScaleSource::Checkpoint),
            _ => {
                let lists: Vec<ScoredList> = eligible.iter().flat_map(|e| first_lists(&e.query, settings)).collect();
                let (loss, measurement) = settings.loss.resolve(&lists)?;
                let source =
                    if settings.loss.measures() { ScaleSource::Measured(measurement) } else { ScaleSource::Given };
                (loss, source)
            }
        };

        let mut kept = Vec::new();
        for Eligible { query, separation, .. } in eligible {
            if separation >= loss.margin {
                counts.already_separated += 1;
                continue;
            }
            if settings.max_queries == 0 || kept.len() < settings.max_queries {
                kept.push(query);
            }
        }
        counts.kept = kept.len();
        if kept.is_empty() {
            return Err(nothing_passes(&counts, settings, Some(loss.margin)));
        }
        Ok(DistillData { queries: kept, counts, loss, scale_source, scoring: scoring.clone(), total_tokens })
    }
}

/// Why no query is left to train on; `margin` once the margin has filtered.
fn nothing_passes(counts: &FilterCounts, settings: &DistillConfig, margin: Option<f64>) -> TrainError {
    let separated = match margin {
        Some(margin) => format!(", {} already separated by stage 1 by the margin {margin}", counts.already_separated),
        None => String::new(),
    };
    TrainError::NoData(format!(
        "no training query passes the stage-2 filter ({} rank lists: {} without a positive among the ranked \
         candidates, {} with {} negatives or fewer{separated})",
        counts.queries, counts.no_positive, counts.too_few_negatives, settings.min_negatives,
    ))
}

/// A query's first-step lists with the scores the student gives them before its first update:
/// the sums of their keys' retrieval scores.
fn first_lists(query: &DistillQuery, settings: &DistillConfig) -> [ScoredList; 2] {
    let DrawnLists { passages, lists } = query.lists(&query.first_draw);
    let student = |p: &DistillPassage| {
        p.keys
            .iter()
            .filter(|k| settings.pseudo_query_keys.counts(query.keys[k.key].view))
            .map(|k| k.retrieval_score)
            .sum::<f64>()
    };
    lists.map(|list| ScoredList {
        student: list.iter().map(|&i| student(passages[i])).collect(),
        teacher: list.iter().map(|&i| passages[i].teacher_score).collect(),
        positive: 0,
    })
}

/// The query's keys with the view each is scored under; checks that the stored weights are the
/// ones `scoring` gives (the candidates were weighed with the same settings).
fn query_keys(
    candidates: &QueryCandidates,
    markers: &Markers,
    scoring: &ScoringConfig,
    total_tokens: u64,
) -> Result<Vec<QueryKey>, TrainError> {
    let used: std::collections::HashSet<u32> = candidates.passage_keys.iter().flatten().copied().collect();
    let mut keys = Vec::with_capacity(candidates.keys.len());
    for (k, key) in candidates.keys.iter().enumerate() {
        let source = KeySource::parse(&key.source).ok_or_else(|| {
            TrainError::Input(format!(
                "query {}: key source `{}` is not one retrieval writes",
                candidates.query_id, key.source
            ))
        })?;
        let (view, exponent) = match source {
            KeySource::Decoded(view) => (view, scoring.exponent),
            KeySource::QuerySpan => (View::Body, scoring.exponent),
            KeySource::Unigram => (View::Body, 1.0),
        };
        let tokens = match view {
            View::PseudoQuery => {
                key.tokens.strip_prefix(markers.pseudo_query.as_slice()).unwrap_or(&key.tokens).to_vec()
            }
            _ => key.tokens.clone(),
        };
        let scale = scoring.source_weights.of(source);
        // Only keys that count for a passage matter (a unigram key may occur nowhere).
        let (weight, _) = weight_and_slope(key.log_prob, key.count, total_tokens, scoring.smoothing, exponent);
        let weight = scale * weight;
        if used.contains(&(k as u32)) && (weight - key.weight).abs() > 1e-6 * key.weight.abs().max(1.0) {
            return Err(TrainError::Input(format!(
                "query {}: a {} key weighs {} in the candidates but {weight} with the retrieve settings and index \
                 given (smoothing {}, exponent {}, source weight {scale}, N {total_tokens}): the candidates were \
                 made with other settings or another index",
                candidates.query_id, key.source, key.weight, scoring.smoothing, scoring.exponent
            )));
        }
        keys.push(QueryKey { tokens, view, count: key.count, exponent, scale });
    }
    Ok(keys)
}

/// A ranked passage with its top keys by what they added to its retrieval score.
fn distill_passage(
    candidates: &QueryCandidates,
    list: &RankList,
    index: usize,
    keys: &[QueryKey],
    keys_per_passage: usize,
) -> Result<DistillPassage, TrainError> {
    let id = &list.passage_ids[index];
    let Some(at) = candidates.passage_ids.iter().position(|p| p == id) else {
        return Err(TrainError::Input(format!(
            "query {}: ranked passage {id} is not among its candidates (the rank lists were made from other candidates)",
            list.query_id
        )));
    };
    let mut found: Vec<(usize, f64, f64)> = candidates.passage_keys[at]
        .iter()
        .zip(&candidates.passage_key_scores[at])
        .filter_map(|(&k, &score)| {
            let stored = candidates.keys.get(k as usize)?;
            (stored.weight > 0.0).then(|| (k as usize, score, score / stored.weight))
        })
        .collect();
    found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    found.truncate(keys_per_passage);
    let keys_here = found
        .into_iter()
        .filter(|(k, _, _)| !keys[*k].tokens.is_empty())
        .map(|(key, retrieval_score, coverage)| PassageKey { key, retrieval_score, coverage })
        .collect();
    Ok(DistillPassage { teacher_score: list.teacher_scores[index], keys: keys_here })
}

/// The stage-2 loss on the engine: the training queries and the tokenizers of sources and
/// targets.
pub struct DistillObjective<'a> {
    pub data: DistillData,
    pub source_tokenizer: &'a TextTokenizer,
    pub target_tokenizer: &'a TextTokenizer,
    pub pad: u32,
    pub settings: DistillConfig,
}

/// A sampled list and its ranking loss, before averaging.
struct QueryLoss {
    loss: Tensor<1>,
    /// `Σ|student score − retrieval score| / Σ|retrieval score|` over the sampled passages.
    retrieval_gap: f64,
    /// Seconds in the encoder, key scoring (and passage scores), and the losses.
    timing: [f64; 3],
    rank: f64,
    generation: f64,
    violated: usize,
    lists_without_violation: usize,
    pairs: usize,
    agreeing: usize,
}

impl Objective for DistillObjective<'_> {
    fn examples(&self) -> usize {
        self.data.queries.len()
    }

    fn loss(&mut self, model: &Student, examples: &mut [Example]) -> Result<Loss, TrainError> {
        let mut losses = Vec::with_capacity(examples.len());
        for example in examples.iter_mut() {
            losses.push(self.query_loss(model, example.index, &mut example.rng)?);
        }
        let n = losses.len().max(1) as f64;
        let total = losses
            .iter()
            .map(|l| l.loss.clone())
            .reduce(|a, b| a + b)
            .ok_or_else(|| TrainError::NoData("an empty batch".into()))?
            / n;
        let sum = |f: fn(&QueryLoss) -> f64| losses.iter().map(f).sum::<f64>();
        let pairs = sum(|l| l.pairs as f64);
        let measures = BTreeMap::from([
            ("rank_loss", sum(|l| l.rank) / n),
            ("generation_loss", sum(|l| l.generation) / n),
            ("violated_pairs", sum(|l| l.violated as f64) / n),
            ("lists_without_violation", sum(|l| l.lists_without_violation as f64)),
            ("agreement", if pairs > 0.0 { sum(|l| l.agreeing as f64) / pairs } else { 1.0 }),
            ("retrieval_score_gap", sum(|l| l.retrieval_gap) / n),
            ("encoder_seconds", sum(|l| l.timing[0])),
            ("key_scoring_seconds", sum(|l| l.timing[1])),
            ("loss_seconds", sum(|l| l.timing[2])),
        ]);
        Ok(Loss { loss: total, weight: n, measures })
    }

    /// Agreement with the target order and violated pairs on fixed lists: the first-step draws
    /// of the first `engine.eval_queries` kept queries (the lists `"auto"` measures). The step
    /// log measures each step's own draw, which moves with the queries drawn; these lists stay,
    /// so values at different steps compare.
    fn fixed_measure(&self, model: &Student) -> Result<Option<FixedMeasure>, TrainError> {
        let count = self.data.queries.len().min(self.settings.engine.eval_queries.max(1));
        let queries = &self.data.queries[..count];
        let model = model.valid();
        let (mut pairs, mut agreeing, mut violated) = (0usize, 0usize, 0usize);
        for query in queries {
            let encoded = self.encode(&model, query)?;
            let drawn = query.lists(&query.first_draw);
            let (scores, _) =
                self.passage_scores(&model, query, &drawn.passages, &|r: usize| prompt_row(&encoded, r))?;
            for list in self.list_losses(&scores, &drawn) {
                pairs += list.pairs;
                agreeing += list.agreeing;
                violated += list.violated;
            }
        }
        let agreement = if pairs > 0 { agreeing as f64 / pairs as f64 } else { 1.0 };
        Ok(Some(FixedMeasure {
            kind: "fixed-lists",
            examples: count,
            metrics: BTreeMap::from([
                ("agreement", agreement),
                ("violated_pairs", violated as f64 / count.max(1) as f64),
            ]),
        }))
    }
}

/// Row `r` of a query encoded under several prompts.
fn prompt_row(encoded: &EncodedSource, r: usize) -> EncodedSource {
    EncodedSource { states: encoded.states.clone().slice(r..r + 1), mask: encoded.mask.clone().slice(r..r + 1) }
}

impl DistillObjective<'_> {
    /// The query encoded under each prompt a step needs: title and body (generation and key
    /// scoring), and the pseudo-query prompt only when pseudo-query keys are scored.
    fn encode(&self, model: &Student, query: &DistillQuery) -> Result<EncodedSource, TrainError> {
        let scores_pseudo_queries = self.settings.pseudo_query_keys == PseudoQueryKeys::Score
            && query.keys.iter().any(|k| k.view == View::PseudoQuery);
        let views = if scores_pseudo_queries { &PROMPTS[..] } else { &PROMPTS[..2] };
        let sources = views
            .iter()
            .map(|v| self.source_tokenizer.encode(&v.source(&query.text)))
            .collect::<Result<Vec<_>, _>>()?;
        let input = batch(&sources, &model.device());
        Ok(model.encode(&Source { ids: input.input_ids, mask: input.attention_mask }))
    }

    /// The ranking loss of each of a draw's two lists, from the scores of its passages.
    fn list_losses(&self, scores: &Tensor<1>, drawn: &DrawnLists) -> [ListLoss; 2] {
        drawn.lists.each_ref().map(|list| {
            let teacher: Vec<f64> = list.iter().map(|&i| drawn.passages[i].teacher_score).collect();
            list_loss(pick(scores, list), &teacher, 0, &self.data.loss)
        })
    }

    fn query_loss(&self, model: &Student, item: usize, rng: &mut StdRng) -> Result<QueryLoss, TrainError> {
        let query = &self.data.queries[item];
        let settings = &self.settings;
        let device = model.device();

        let draw = Draw::random(rng, query.positives.len(), query.pool.len(), settings.sampled_negatives);
        let span = sample_spans(
            &query.body,
            &query.text,
            1,
            &PairConfig { span_words: settings.span_words, ..PairConfig::default() },
            rng,
        );

        let started = std::time::Instant::now();
        let encoded = self.encode(model, query)?;
        let row = |r: usize| prompt_row(&encoded, r);
        let encoder_seconds = started.elapsed().as_secs_f64();
        // Student scores of the distinct passages of both lists.
        let started = std::time::Instant::now();
        let drawn = query.lists(&draw);
        let (scores, retrieval) = self.passage_scores(model, query, &drawn.passages, &row)?;
        let key_scoring_seconds = started.elapsed().as_secs_f64();
        // How far the student's scores are from what retrieval gave the same keys: 0 up to
        // float error while the student is the one that retrieved the candidates.
        let student = scores.clone().detach().into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        let gap: f64 = student.iter().zip(&retrieval).map(|(&s, &r)| (f64::from(s) - r).abs()).sum();
        let retrieval_gap = gap / retrieval.iter().map(|r| r.abs()).sum::<f64>().max(1e-9);
        let started = std::time::Instant::now();
        let mut halves = Vec::with_capacity(2);
        let (mut violated, mut clean, mut pairs, mut agreeing) = (0, 0, 0, 0);
        for list in self.list_losses(&scores, &drawn) {
            violated += list.violated;
            clean += usize::from(list.violated == 0);
            pairs += list.pairs;
            agreeing += list.agreeing;
            halves.push(list.loss * 0.5);
        }
        let rank = halves.into_iter().reduce(|a, b| a + b).ok_or_else(|| TrainError::NoData("no list".into()))?;

        // Generation loss of pos0's title (title prompt) and a span of its text (body prompt).
        let mut generation_terms = Vec::with_capacity(2);
        for (view_row, target) in [
            (0usize, format!("{} {}", query.title.trim(), dgr_core::views::END_MARK)),
            (1, span.into_iter().next().unwrap_or_default()),
        ] {
            if target.trim().is_empty() || (view_row == 0 && query.title.trim().is_empty()) {
                continue;
            }
            let labels: Vec<i64> =
                self.target_tokenizer.encode(&target)?.ids.iter().skip(1).map(|&t| i64::from(t)).collect();
            let labels = vec![labels];
            let decoder_ids = model.shift_right(&labels, self.pad, &device);
            let logits = model.decode(&row(view_row), decoder_ids);
            generation_terms.push(token_cross_entropy(logits, &labels, settings.label_smoothing).loss * 0.5);
        }
        let generation = generation_terms.into_iter().reduce(|a, b| a + b);
        let rank_value = f64::from(rank.clone().detach().into_scalar::<f32>());
        let (loss, generation_value) = match generation {
            Some(generation) => {
                let value = f64::from(generation.clone().detach().into_scalar::<f32>());
                (rank + generation * settings.lambda, value)
            }
            None => (rank, 0.0),
        };
        Ok(QueryLoss {
            loss,
            timing: [encoder_seconds, key_scoring_seconds, started.elapsed().as_secs_f64()],
            retrieval_gap,
            rank: rank_value,
            generation: generation_value,
            violated,
            lists_without_violation: clean,
            pairs,
            agreeing,
        })
    }

    /// `[passages]`: each passage's student score from its keys (see the module documentation).
    fn passage_scores(
        &self,
        model: &Student,
        query: &DistillQuery,
        passages: &[&DistillPassage],
        row: &dyn Fn(usize) -> EncodedSource,
    ) -> Result<(Tensor<1>, Vec<f64>), TrainError> {
        let device = model.device();
        // The keys these passages use, grouped by the view they are scored under.
        let mut used: Vec<usize> = passages.iter().flat_map(|p| p.keys.iter().map(|k| k.key)).collect();
        used.sort_unstable();
        used.dedup();
        used.retain(|&k| self.settings.pseudo_query_keys.counts(query.keys[k].view));
        let mut log_probs: Vec<Tensor<1>> = Vec::new();
        let mut order: Vec<usize> = Vec::new();
        for (view_row, &view) in PROMPTS.iter().enumerate() {
            let keys: Vec<usize> = used.iter().copied().filter(|&k| query.keys[k].view == view).collect();
            if keys.is_empty() {
                continue;
            }
            let tokens: Vec<Vec<u32>> = keys.iter().map(|&k| query.keys[k].tokens.clone()).collect();
            log_probs.push(model.score_keys_packed(&row(view_row), &tokens));
            order.extend(keys);
        }
        let count = passages.len();
        if order.is_empty() {
            return Ok((Tensor::zeros([count], &device), vec![0.0; count]));
        }
        let log_probs = Tensor::cat(log_probs, 0);
        let values = log_probs
            .clone()
            .detach()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Input(format!("cannot read key scores back: {e:?}")))?;
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        let keys = order.len();
        let mut slopes = vec![0f32; count * keys];
        let mut offsets = vec![0f32; count];
        let mut retrieval = vec![0f64; count];
        for (p, passage) in passages.iter().enumerate() {
            let mut offset = 0.0;
            for key in &passage.keys {
                let Some(&i) = position.get(&key.key) else { continue };
                retrieval[p] += key.retrieval_score;
                let k = &query.keys[key.key];
                let lp = f64::from(values[i]);
                let (weight, slope) =
                    weight_and_slope(lp, k.count, self.data.total_tokens, self.data.scoring.smoothing, k.exponent);
                let (weight, slope) = (k.scale * weight, k.scale * slope);
                slopes[p * keys + i] += (key.coverage * slope) as f32;
                offset += key.coverage * (weight - slope * lp);
            }
            offsets[p] = offset as f32;
        }
        let slopes = Tensor::<2>::from_data(TensorData::new(slopes, [count, keys]), &device);
        let offsets = Tensor::<1>::from_data(TensorData::new(offsets, [count]), &device);
        Ok((slopes.matmul(log_probs.reshape([keys, 1])).reshape([count]) + offsets, retrieval))
    }
}

#[cfg(test)]
mod tests {
    use dgr_core::candidates::{CandidateKey, QueryCandidates};
    use dgr_index::evidence::{ScoringConfig, SourceWeights};

    use super::{Markers, query_keys};

    fn candidates(source: &str) -> QueryCandidates {
        let key = CandidateKey { tokens: vec![7, 8], source: source.into(), log_prob: -1.0, count: 3, weight: 0.0 };
        QueryCandidates {
            query_id: "q1".into(),
            passage_ids: vec!["p1".into()],
            scores: vec![0.0],
            passage_keys: vec![vec![]],
            passage_key_scores: vec![vec![]],
            keys: vec![key],
        }
    }

    #[test]
    fn a_key_takes_its_sources_weight_and_an_unknown_source_is_refused() {
        let markers = Markers { pseudo_query: vec![99] };
        let scoring = ScoringConfig {
            source_weights: SourceWeights { query_span: 5.0, ..SourceWeights::default() },
            ..ScoringConfig::default()
        };
        let keys = query_keys(&candidates("query-span"), &markers, &scoring, 1000).unwrap();
        assert_eq!(keys[0].scale, 5.0);
        let keys = query_keys(&candidates("title"), &markers, &scoring, 1000).unwrap();
        assert_eq!(keys[0].scale, 1.0);
        let error = query_keys(&candidates("query_span"), &markers, &scoring, 1000).unwrap_err().to_string();
        assert!(error.contains("q1") && error.contains("`query_span`"), "{error}");
    }
}
