//! dgr-eval: retrieval metrics over a TREC run.
//!
//! - [`evaluate_qrels`]: Recall@k, MRR@10 and nDCG@10 against graded qrels, with trec_eval's
//!   definitions (values agree with `ranx` to 1e-6 on real runs; see the crate's tests);
//! - [`evaluate_answers`]: DPR-style answer-hit R@k, where a query counts as a hit at k if any
//!   of its top k passages contains one of its answers after DPR's normalisation.
//!
//! Queries are averaged over the judged set: every query of the qrels with at least one
//! relevant document (relevance > 0), or every query with answers. A judged query missing
//! from the run scores 0. Run queries that are not judged are ignored.
//!
//! ```
//! use dgr_core::trec::{Qrels, Run, ScoredDoc};
//! let mut qrels = Qrels::default();
//! qrels.insert("q1", "d2", 1);
//! let mut run = Run::default();
//! run.rankings.insert("q1".into(), vec![
//!     ScoredDoc { doc_id: "d1".into(), score: 2.0 },
//!     ScoredDoc { doc_id: "d2".into(), score: 1.0 },
//! ]);
//! let report = dgr_eval::evaluate_qrels(&run, &qrels, &[1, 2]);
//! assert_eq!(report.metrics["mrr@10"], 0.5);
//! assert_eq!(report.metrics["recall@1"], 0.0);
//! ```

mod answers;
mod metrics;

pub use answers::{AnswerMatcher, has_answer};
pub use metrics::{EvalReport, evaluate_answers, evaluate_qrels};
