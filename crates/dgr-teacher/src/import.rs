//! Teacher scores computed elsewhere, turned into rank lists.
//!
//! - **DGR JSONL** (the reference implementation's training files): one query per line,
//!   `{"id"?, "question", "positive_ctxs": [..], "negative_ctxs": [..], "hard_negative_ctxs"?: [..]}`;
//!   each context has `passage_id` (or `id` / `docid`), an optional retriever `score`, and the
//!   teacher's score in a `score_teacher_*` field (named with `score_field` when there are
//!   several). Query ids: `id` or `qid` when present, else `<split>-<line index>` as `dgr
//!   prepare --format dpr` numbers DPR questions.
//! - **TSV**: `qid<TAB>pid<TAB>score` lines (`#` comments, blank lines skipped); a query's
//!   passages in file order, candidate scores 0.
//!
//! Every query and passage must exist in the prepared dataset; labels come from its qrels
//! (and are at least 1 for the JSONL's `positive_ctxs`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;

use dgr_core::error::{Error, Position};
use dgr_core::rank_lists::RankList;
use serde_json::Value;

use crate::candidates::Dataset;
use crate::error::{Result, TeacherError};

/// Reads a DGR JSONL file of teacher scores.
pub fn read_dgr_jsonl(path: &Path, dataset: &Dataset, split: &str, score_field: Option<&str>) -> Result<Vec<RankList>> {
    let mut rows = Vec::new();
    for (index, line) in lines(path)?.enumerate() {
        let (number, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |field: &str, reason: &'static str, detail: String| {
            TeacherError::Data(Error::input(path, Position::Line(number), field, reason, detail))
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| bad("-", "is not JSON", e.to_string()))?;
        let query_id = match value.get("id").or_else(|| value.get("qid")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(bad("id", "is not a string or number", other.to_string())),
            None => format!("{split}-{index}"),
        };
        if dataset.query(&query_id).is_none() {
            return Err(bad("id", "names no query of the split", query_id));
        }
        let mut ids = Vec::new();
        let mut candidate_scores = Vec::new();
        let mut teacher_scores = Vec::new();
        let mut positives = HashSet::new();
        let mut seen = HashSet::new();
        for list in ["positive_ctxs", "negative_ctxs", "hard_negative_ctxs"] {
            let contexts = match value.get(list) {
                None if list == "hard_negative_ctxs" => continue,
                None => return Err(bad(list, "is missing", String::new())),
                Some(Value::Array(items)) => items,
                Some(other) => return Err(bad(list, "is not a list", other.to_string())),
            };
            for (i, ctx) in contexts.iter().enumerate() {
                let at = |name: &str| format!("{list}[{i}].{name}");
                let id = match ctx.get("passage_id").or_else(|| ctx.get("id")).or_else(|| ctx.get("docid")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(bad(&at("passage_id"), "is missing", String::new())),
                };
                if dataset.passage(&id).is_none() {
                    return Err(bad(&at("passage_id"), "names no passage of the corpus", id));
                }
                let field = teacher_field(ctx, score_field)
                    .map_err(|reason| bad(&at("score_teacher_*"), reason, String::new()))?;
                let teacher = ctx[field.as_str()]
                    .as_f64()
                    .ok_or_else(|| bad(&at(&field), "is not a number", ctx[field.as_str()].to_string()))?;
                let candidate = match ctx.get("score") {
                    None => 0.0,
                    Some(v) => json_number(v).ok_or_else(|| bad(&at("score"), "is not a number", v.to_string()))?,
                };
                if !seen.insert(id.clone()) {
                    continue; // listed twice (e.g. as positive and as negative): the first counts
                }
                if list == "positive_ctxs" {
                    positives.insert(id.clone());
                }
                ids.push(id);
                candidate_scores.push(candidate);
                teacher_scores.push(teacher);
            }
        }
        let mut labels = dataset.labels(&query_id, &ids);
        for (label, id) in labels.iter_mut().zip(&ids) {
            if positives.contains(id) {
                *label = (*label).max(1);
            }
        }
        rows.push(RankList::new(query_id, ids, candidate_scores, teacher_scores, labels));
    }
    Ok(rows)
}

/// The teacher-score field of a context: `wanted`, or the only `score_teacher_*` field.
fn teacher_field(ctx: &Value, wanted: Option<&str>) -> std::result::Result<String, &'static str> {
    if let Some(name) = wanted {
        return if ctx.get(name).is_some() {
            Ok(name.to_string())
        } else {
            Err("the requested score field is missing")
        };
    }
    let mut found = ctx.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("score_teacher"));
    match (found.next(), found.next()) {
        (Some((name, _)), None) => Ok(name.clone()),
        (None, _) => Err("is missing (no score_teacher_* field)"),
        (Some(_), Some(_)) => Err("is ambiguous: several score_teacher_* fields (choose one with --score-field)"),
    }
}

/// A JSON number, or a string holding one (the reference writes both).
fn json_number(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Reads a `qid pid score` TSV of teacher scores.
pub fn read_score_tsv(path: &Path, dataset: &Dataset) -> Result<Vec<RankList>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_query: HashMap<String, (Vec<String>, Vec<f64>)> = HashMap::new();
    for line in lines(path)? {
        let (number, text) = line?;
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let bad = |field: &str, reason: &'static str, detail: String| {
            TeacherError::Data(Error::input(path, Position::Line(number), field, reason, detail))
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [qid, pid, score] = fields[..] else {
            return Err(bad("-", "expected 3 columns (qid pid score)", format!("found {}", fields.len())));
        };
        let score: f64 = score.parse().map_err(|_| bad("score", "is not a number", score.to_string()))?;
        if dataset.query(qid).is_none() {
            return Err(bad("qid", "names no query of the split", qid.to_string()));
        }
        if dataset.passage(pid).is_none() {
            return Err(bad("pid", "names no passage of the corpus", pid.to_string()));
        }
        let entry = by_query.entry(qid.to_string()).or_insert_with(|| {
            order.push(qid.to_string());
            (Vec::new(), Vec::new())
        });
        if entry.0.iter().any(|p| p == pid) {
            return Err(bad("pid", "is listed twice for this query", pid.to_string()));
        }
        entry.0.push(pid.to_string());
        entry.1.push(score);
    }
    Ok(order
        .into_iter()
        .filter_map(|qid| {
            let (ids, scores) = by_query.remove(&qid)?;
            let labels = dataset.labels(&qid, &ids);
            Some(RankList::new(qid, ids.clone(), vec![0.0; ids.len()], scores, labels))
        })
        .collect())
}

/// The file's lines with their 1-based numbers, streamed.
fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(u64, String)>> + '_> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(i, line)| line.map(|l| (i as u64 + 1, l)).map_err(|e| Error::io(path, "cannot read", e).into())))
}
