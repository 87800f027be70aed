//! TREC qrels and run files, the interchange formats of IR evaluation.
//!
//! - qrels: `query_id iteration doc_id relevance` per line (whitespace separated; the iteration
//!   column is ignored; relevance is an integer, graded, `<= 0` means not relevant).
//! - run: `query_id Q0 doc_id rank score tag` per line. As trec_eval does, the rank column is
//!   ignored and documents are ordered by score (descending), ties by doc id (descending).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Position, Result};

/// Graded relevance judgments: query id -> doc id -> relevance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    pub judgments: BTreeMap<String, BTreeMap<String, i32>>,
}

/// One retrieved document with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredDoc {
    pub doc_id: String,
    pub score: f64,
}

/// A ranking per query, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub rankings: BTreeMap<String, Vec<ScoredDoc>>,
}

impl Qrels {
    pub fn insert(&mut self, query_id: &str, doc_id: &str, relevance: i32) {
        self.judgments.entry(query_id.to_string()).or_default().insert(doc_id.to_string(), relevance);
    }

    /// Number of judgment lines.
    pub fn len(&self) -> usize {
        self.judgments.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.judgments.is_empty()
    }
}

impl Run {
    /// Sorts every ranking the way trec_eval reads a run: score descending, then doc id
    /// descending, so that equal scores give the same order everywhere.
    pub fn sort(&mut self) {
        for docs in self.rankings.values_mut() {
            docs.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.doc_id.cmp(&a.doc_id)));
        }
    }
}

fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(u64, String)>> + '_> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(i, line)| line.map(|l| (i as u64 + 1, l)).map_err(|e| Error::io(path, "cannot read", e))))
}

/// Checks that an id can stand in a whitespace-separated TREC file.
pub fn check_id(path: &Path, position: Position, field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::input(path, position, field, "is empty", ""));
    }
    if id.chars().any(char::is_whitespace) {
        return Err(Error::input(path, position, field, "contains whitespace", format!("{id:?}")));
    }
    Ok(())
}

/// Splits a whitespace-separated line into exactly `n` columns; `None` for a blank line.
fn columns<'a>(path: &Path, line_no: u64, line: &'a str, n: usize, names: &str) -> Result<Option<Vec<&'a str>>> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.is_empty() {
        return Ok(None);
    }
    if cols.len() != n {
        return Err(Error::input(
            path,
            Position::Line(line_no),
            "line",
            "wrong number of columns",
            format!("expected {n} ({names}), found {}", cols.len()),
        ));
    }
    Ok(Some(cols))
}

/// One qrels line as (query id, doc id, relevance); `None` for a blank line.
pub fn parse_qrels_line<'a>(path: &Path, line_no: u64, line: &'a str) -> Result<Option<(&'a str, &'a str, i32)>> {
    let Some(cols) = columns(path, line_no, line, 4, "query_id iteration doc_id relevance")? else {
        return Ok(None);
    };
    let relevance: i32 = cols[3]
        .parse()
        .map_err(|_| Error::input(path, Position::Line(line_no), "relevance", "not an integer", cols[3]))?;
    Ok(Some((cols[0], cols[2], relevance)))
}

pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let mut qrels = Qrels::default();
    for line in lines(path)? {
        let (n, line) = line?;
        let Some((query_id, doc_id, relevance)) = parse_qrels_line(path, n, &line)? else {
            continue;
        };
        let previous = qrels.judgments.entry(query_id.to_string()).or_default().insert(doc_id.to_string(), relevance);
        if previous.is_some() {
            return Err(Error::input(
                path,
                Position::Line(n),
                "doc_id",
                "judged twice for the same query",
                format!("{query_id} {doc_id}"),
            ));
        }
    }
    Ok(qrels)
}

pub fn write_qrels(path: &Path, qrels: &Qrels) -> Result<()> {
    let mut out = String::new();
    for (qid, docs) in &qrels.judgments {
        for (doc, rel) in docs {
            let _ = writeln!(out, "{qid} 0 {doc} {rel}");
        }
    }
    write_atomic(path, out.as_bytes())
}

pub fn read_run(path: &Path) -> Result<Run> {
    let mut run = Run::default();
    let mut seen = std::collections::HashSet::new();
    for line in lines(path)? {
        let (n, line) = line?;
        let Some(cols) = columns(path, n, &line, 6, "query_id Q0 doc_id rank score tag")? else {
            continue;
        };
        let pos = || Position::Line(n);
        let score: f64 = cols[4]
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| Error::input(path, pos(), "score", "not a finite number", cols[4]))?;
        if !seen.insert((cols[0].to_string(), cols[2].to_string())) {
            return Err(Error::input(
                path,
                pos(),
                "doc_id",
                "retrieved twice for the same query",
                format!("{} {}", cols[0], cols[2]),
            ));
        }
        run.rankings.entry(cols[0].to_string()).or_default().push(ScoredDoc { doc_id: cols[2].to_string(), score });
    }
    run.sort();
    Ok(run)
}

/// Writes `run` (assumed sorted) with ranks 1..n and the given system tag.
pub fn write_run(path: &Path, run: &Run, tag: &str) -> Result<()> {
    let mut out = String::new();
    for (qid, docs) in &run.rankings {
        for (rank, doc) in docs.iter().enumerate() {
            let _ = writeln!(out, "{qid} Q0 {} {} {} {tag}", doc.doc_id, rank + 1, doc.score);
        }
    }
    write_atomic(path, out.as_bytes())
}
