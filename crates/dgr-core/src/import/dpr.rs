//! DPR layout (a directory):
//!
//! - `psgs_w100.tsv`: header `id<TAB>text<TAB>title`, CSV quoting (as DPR's `csv.reader`);
//! - `<name>-<split>.qa.csv`: `question<TAB>answers`, answers a Python list literal
//!   (`['Wilhelm Conrad Röntgen']`); no judgments, used for answer-hit evaluation;
//!   query ids are `<split>-<row>` (0-based), as DPR numbers them;
//! - `<name>-<split>.json`: DPR biencoder training data, a JSON array of
//!   `{question, answers, positive_ctxs: [{passage_id, ..}], ..}`, streamed element by element;
//!   each positive context becomes a judgment of relevance 1.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::builder::DatasetBuilder;
use super::open_input;
use crate::error::{Error, Position, Result};
use crate::progress::Progress;
use crate::records::{Passage, Query};

pub(super) fn import(dir: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    import_passages(&dir.join("psgs_w100.tsv"), builder, progress)?;
    let (qa_files, biencoder_files) = query_files(dir)?;
    if qa_files.is_empty() && biencoder_files.is_empty() {
        return Err(Error::format(dir, "no <name>-<split>.qa.csv or <name>-<split>.json query file found"));
    }
    for (split, path) in &qa_files {
        import_qa(path, split, builder, progress)?;
    }
    for (split, path) in &biencoder_files {
        import_biencoder(path, split, builder, progress)?;
    }
    Ok(())
}

type SplitFiles = Vec<(String, PathBuf)>;

fn query_files(dir: &Path) -> Result<(SplitFiles, SplitFiles)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list directory", e))?;
    let (mut qa, mut biencoder) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, "cannot list directory", e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let (stem, list) = if let Some(stem) = name.strip_suffix(".qa.csv") {
            (stem, &mut qa)
        } else if let Some(stem) = name.strip_suffix(".json") {
            (stem, &mut biencoder)
        } else {
            continue;
        };
        let split = stem.rsplit('-').next().unwrap_or(stem).to_string();
        list.push((split, path));
    }
    qa.sort();
    biencoder.sort();
    for (split, path) in &qa {
        if let Some((_, other)) = biencoder.iter().find(|(s, _)| s == split) {
            return Err(Error::format(
                path,
                format!("split `{split}` is also given by {}: keep one source per split", other.display()),
            ));
        }
    }
    Ok((qa, biencoder))
}

fn tsv_reader<R: std::io::Read>(reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().delimiter(b'\t').has_headers(false).flexible(true).from_reader(reader)
}

fn import_passages(path: &Path, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let reader = open_input(path, "psgs_w100.tsv", progress)?;
    for record in tsv_reader(reader).into_records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let n = record.position().map_or(0, |p| p.line());
        if n == 1 && record.get(0) == Some("id") {
            continue; // header
        }
        if record.len() != 3 {
            let e = Error::input(
                path,
                Position::Line(n),
                "line",
                "expected 3 columns (id text title)",
                format!("found {}", record.len()),
            );
            builder.reject(e)?;
            continue;
        }
        let passage = Passage {
            id: record[0].to_string(),
            title: record[2].to_string(),
            text: record[1].to_string(),
            pseudo_queries: Vec::new(),
        };
        builder.add_passage(passage, path, Position::Line(n))?;
    }
    progress.finish();
    Ok(())
}

fn import_qa(path: &Path, split: &str, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let reader = open_input(path, "qa.csv", progress)?;
    for (row, record) in tsv_reader(reader).into_records().enumerate() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let n = record.position().map_or(0, |p| p.line());
        if record.len() != 2 {
            let e = Error::input(
                path,
                Position::Line(n),
                "line",
                "expected 2 columns (question answers)",
                format!("found {}", record.len()),
            );
            builder.reject(e)?;
            continue;
        }
        let answers = match parse_python_str_list(&record[1]) {
            Ok(answers) => answers,
            Err(detail) => {
                builder.reject(Error::input(
                    path,
                    Position::Line(n),
                    "answers",
                    "not a Python list of strings",
                    detail,
                ))?;
                continue;
            }
        };
        let query = Query { id: format!("{split}-{row}"), text: record[0].to_string(), answers };
        builder.add_query(split, query, path, Position::Line(n))?;
    }
    progress.finish();
    Ok(())
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line());
    Error::input(path, Position::Line(line), "line", "malformed TSV", e.to_string())
}

#[derive(serde::Deserialize)]
struct BiencoderEntry {
    question: String,
    #[serde(default)]
    answers: Vec<String>,
    #[serde(default)]
    positive_ctxs: Vec<Context>,
}

#[derive(serde::Deserialize)]
struct Context {
    #[serde(default, deserialize_with = "id_or_number")]
    passage_id: Option<String>,
}

fn id_or_number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn import_biencoder(path: &Path, split: &str, builder: &mut DatasetBuilder, progress: &dyn Progress) -> Result<()> {
    let reader = open_input(path, "biencoder json", progress)?;
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let streamed = EntrySeed { path, split, builder, failure: &failure }.deserialize(&mut de);
    if let Some(err) = failure.into_inner() {
        return Err(err);
    }
    streamed.map_err(|e| {
        Error::input(path, Position::Line(e.line() as u64), "json", "malformed biencoder JSON", e.to_string())
    })?;
    progress.finish();
    Ok(())
}

/// Visits the top-level array one element at a time, so the file is never held in memory.
struct EntrySeed<'a, 'b> {
    path: &'a Path,
    split: &'a str,
    builder: &'b mut DatasetBuilder,
    failure: &'a RefCell<Option<Error>>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of DPR biencoder entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut index = 0u64;
        while let Some(entry) = seq.next_element::<BiencoderEntry>()? {
            if let Err(e) = add_entry(self.builder, self.path, self.split, index, entry) {
                *self.failure.borrow_mut() = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
}

fn add_entry(builder: &mut DatasetBuilder, path: &Path, split: &str, index: u64, entry: BiencoderEntry) -> Result<()> {
    let id = format!("{split}-{index}");
    let position = Position::Record(format!("element {index}"));
    let query = Query { id: id.clone(), text: entry.question, answers: entry.answers };
    builder.add_query(split, query, path, position.clone())?;
    if !builder.has_query(split, &id) {
        return Ok(()); // query skipped as invalid: its judgments go with it
    }
    for ctx in entry.positive_ctxs {
        match ctx.passage_id {
            Some(pid) => builder.add_qrel(split, &id, &pid, 1, path, position.clone())?,
            None => {
                builder.reject(Error::input(path, position.clone(), "positive_ctxs.passage_id", "is missing", ""))?
            }
        }
    }
    Ok(())
}

/// Parses a Python list literal of string literals, e.g. `['a', "b's", 'c\'d']`.
pub fn parse_python_str_list(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut chars = text.trim().chars().peekable();
    if chars.next() != Some('[') {
        return Err(format!("expected `[` at the start of {text:?}"));
    }
    let mut items = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            Some(']') => {
                chars.next();
                break;
            }
            Some(_) => {}
            None => return Err("unterminated list".into()),
        }
        chars.next_if(|&c| c == 'u' || c == 'U');
        let quote = match chars.next() {
            Some(q @ ('\'' | '"')) => q,
            other => return Err(format!("expected a string literal, found {other:?}")),
        };
        let mut item = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated string literal".into()),
                Some(c) if c == quote => break,
                Some('\\') => item.push(unescape(&mut chars)?),
                Some(c) => item.push(c),
            }
        }
        items.push(item);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some(',') => {}
            Some(']') => break,
            other => return Err(format!("expected `,` or `]`, found {other:?}")),
        }
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err("text after the closing `]`".into());
    }
    Ok(items)
}

fn unescape(chars: &mut impl Iterator<Item = char>) -> std::result::Result<char, String> {
    let hex = |chars: &mut dyn Iterator<Item = char>, n: usize| -> std::result::Result<char, String> {
        let digits: String = chars.take(n).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape digits {digits:?}"))
    };
    match chars.next() {
        Some('n') => Ok('\n'),
        Some('t') => Ok('\t'),
        Some('r') => Ok('\r'),
        Some('x') => hex(chars, 2),
        Some('u') => hex(chars, 4),
        Some('U') => hex(chars, 8),
        Some(c @ ('\\' | '\'' | '"')) => Ok(c),
        other => Err(format!("unsupported escape \\{}", other.map(String::from).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_python_str_list;

    #[test]
    fn python_lists_parse_like_python() {
        assert_eq!(parse_python_str_list("['Wilhelm Conrad Röntgen']").unwrap(), vec!["Wilhelm Conrad Röntgen"]);
        assert_eq!(
            parse_python_str_list(r#"["Ogg's", 'it\'s', '\xe9', "a\\b"]"#).unwrap(),
            vec!["Ogg's", "it's", "é", "a\\b"]
        );
        assert_eq!(parse_python_str_list("[]").unwrap(), Vec::<String>::new());
        assert!(parse_python_str_list("['open").is_err());
        assert!(parse_python_str_list("'a'").is_err());
        assert!(parse_python_str_list("['a'] x").is_err());
    }
}
