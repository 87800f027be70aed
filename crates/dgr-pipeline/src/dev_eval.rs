//! Retrieval on the first dev queries during training (`engine.eval_every`), so a run shows
//! whether its student retrieves better, appended to `<job.dir>/metrics.jsonl`.

use crate::error::{Context, Result};
use burn::module::Module;
use dgr_core::Query;
use dgr_core::arrow_file::read_records;
use dgr_core::trec::{Qrels, read_qrels};
use dgr_eval::evaluate_qrels;
use dgr_index::CorpusIndex;
use dgr_model::student::Student;
use dgr_model::tokenizer::TextTokenizer;
use dgr_trainer::engine::EngineConfig;
use tracing::info;

use crate::config::Config;
use crate::index::open_index;
use crate::metrics::append_metrics;
use crate::retrieve::{retrieve_run, retriever, threads};

const SPLIT: &str = "dev";

/// What an evaluation needs, loaded once per run.
pub struct DevEvaluation {
    stage: &'static str,
    index: CorpusIndex,
    tokenizer: TextTokenizer,
    queries: Vec<Query>,
    qrels: Qrels,
}

impl DevEvaluation {
    /// `None` when `engine.eval_every` is 0; an error when the job has no FM-index or no
    /// judged dev split to evaluate on.
    pub fn load(config: &Config, engine: &EngineConfig, stage: &'static str) -> Result<Option<Self>> {
        if engine.eval_every == 0 {
            return Ok(None);
        }
        let hint = "build the FM-index with `dgr index build`, or set engine.eval_every = 0";
        let (index, _) = open_index(config, &config.job.index_dir()).context(hint)?;
        let data = config.job.data_dir();
        let mut queries: Vec<Query> = read_records(&data.join(format!("queries-{SPLIT}.arrow")))
            .with_context(|| format!("no {SPLIT} queries to evaluate on (engine.eval_every)"))?;
        queries.truncate(engine.eval_queries.max(1));
        let mut qrels = read_qrels(&data.join(format!("qrels-{SPLIT}.tsv")))?;
        let evaluated: std::collections::HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
        qrels.judgments.retain(|query, _| evaluated.contains(query.as_str()));
        let tokenizer = TextTokenizer::from_file(&config.index.tokenizer, config.retrieve.max_source_tokens)?;
        Ok(Some(DevEvaluation { stage, index, tokenizer, queries, qrels }))
    }

    /// Retrieves the dev queries with `model` (its weights as they are after `step`) and appends
    /// the metrics to `metrics.jsonl`.
    pub fn run(&self, config: &Config, model: &Student, step: u64) -> Result<()> {
        let inference = model.valid();
        let r = &config.retrieve;
        let retriever = retriever(r, &inference, &self.tokenizer, &self.index)?;
        let run = retrieve_run(&retriever, &self.index, &self.queries, r.batch_queries, threads(r.threads))?;
        let report = evaluate_qrels(&run, &self.qrels, &config.eval.recall_at);
        let show = |name: &str| report.metrics.get(name).map_or("-".to_string(), |v| format!("{v:.4}"));
        info!(
            step,
            queries = report.queries,
            recall_at_5 = show("recall@5"),
            recall_at_20 = show("recall@20"),
            mrr_at_10 = show("mrr@10"),
            "{} dev evaluation",
            self.stage
        );
        let line = serde_json::json!({
            "stage": self.stage,
            "step": step,
            "split": SPLIT,
            "kind": "qrels",
            "queries": report.queries,
            "metrics": report.metrics,
        });
        append_metrics(&config.job.dir.join("metrics.jsonl"), &[line])
    }
}
