use std::collections::{BTreeMap, HashMap};

use dgr_core::trec::{Qrels, Run, ScoredDoc};

use crate::answers::AnswerMatcher;

/// Mean metric values over the judged queries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Number of queries averaged over.
    pub queries: usize,
    /// Metric name (`recall@20`, `mrr@10`, `ndcg@10`, `answer_hit@5`) -> mean value in [0, 1].
    pub metrics: BTreeMap<String, f64>,
}

/// Cutoff of MRR and nDCG, as in the MS MARCO and TREC DL conventions.
const RANK_CUTOFF: usize = 10;

/// Recall@k for each of `recall_at`, MRR@10 and nDCG@10 (trec_eval `ndcg_cut.10`: linear gain,
/// log2 discount, ideal ranking from all judged documents).
pub fn evaluate_qrels(run: &Run, qrels: &Qrels, recall_at: &[usize]) -> EvalReport {
    let empty: Vec<ScoredDoc> = Vec::new();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut queries = 0;
    for (qid, judged) in &qrels.judgments {
        let relevant = judged.values().filter(|&&r| r > 0).count();
        if relevant == 0 {
            continue;
        }
        queries += 1;
        let ranking = run.rankings.get(qid).unwrap_or(&empty);
        let gain = |doc: &ScoredDoc| judged.get(&doc.doc_id).copied().unwrap_or(0).max(0);

        for &k in recall_at {
            let hits = ranking.iter().take(k).filter(|d| gain(d) > 0).count();
            *sums.entry(format!("recall@{k}")).or_default() += hits as f64 / relevant as f64;
        }
        let first_hit = ranking.iter().take(RANK_CUTOFF).position(|d| gain(d) > 0);
        *sums.entry(format!("mrr@{RANK_CUTOFF}")).or_default() += first_hit.map_or(0.0, |i| 1.0 / (i + 1) as f64);

        let dcg = discounted(ranking.iter().take(RANK_CUTOFF).map(gain));
        let mut ideal: Vec<i32> = judged.values().map(|&r| r.max(0)).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg = discounted(ideal.into_iter().take(RANK_CUTOFF));
        *sums.entry(format!("ndcg@{RANK_CUTOFF}")).or_default() += if idcg > 0.0 { dcg / idcg } else { 0.0 };
    }
    report(queries, sums)
}

fn discounted(gains: impl Iterator<Item = i32>) -> f64 {
    gains.enumerate().map(|(i, g)| f64::from(g) / ((i + 2) as f64).log2()).sum()
}

/// Answer-hit R@k: the share of queries with answers whose top k passages contain an answer.
/// `passage_text` maps a run's doc id to its text (unknown ids never hit).
pub fn evaluate_answers<'a>(
    run: &Run,
    answers: &HashMap<String, Vec<String>>,
    passage_text: impl Fn(&str) -> Option<&'a str>,
    at: &[usize],
) -> EvalReport {
    let matcher = AnswerMatcher::new();
    let max_k = at.iter().copied().max().unwrap_or(0);
    let mut sums: BTreeMap<String, f64> = at.iter().map(|k| (format!("answer_hit@{k}"), 0.0)).collect();
    let mut queries = 0;
    for (qid, query_answers) in answers {
        if query_answers.is_empty() {
            continue;
        }
        queries += 1;
        let answer_tokens: Vec<Vec<String>> = query_answers.iter().map(|a| matcher.tokens(a)).collect();
        let first_hit = run.rankings.get(qid).and_then(|ranking| {
            ranking.iter().take(max_k).position(|doc| {
                passage_text(&doc.doc_id).is_some_and(|text| matcher.contains_any(text, &answer_tokens))
            })
        });
        if let Some(rank) = first_hit {
            for &k in at {
                if rank < k {
                    *sums.entry(format!("answer_hit@{k}")).or_default() += 1.0;
                }
            }
        }
    }
    report(queries, sums)
}

fn report(queries: usize, sums: BTreeMap<String, f64>) -> EvalReport {
    let metrics =
        sums.into_iter().map(|(name, sum)| (name, if queries == 0 { 0.0 } else { sum / queries as f64 })).collect();
    EvalReport { queries, metrics }
}
