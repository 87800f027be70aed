//! Dataset importers: each reads one public layout and writes a prepared dataset directory:
//!
//! ```text
//! corpus.arrow               Passage records
//! queries-<split>.arrow      Query records, one file per split
//! qrels-<split>.tsv          TREC qrels of that split (where the source has judgments)
//! dataset.json               manifest, written last: files, row counts, checksums, summary
//! ```
//!
//! Inputs are streamed record by record. The directory is built under a temporary name and
//! renamed into place at the end, so a failed import leaves nothing behind.

mod beir;
mod builder;
mod dpr;
mod manifest;
mod msmarco;
mod wiki_vital;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use builder::ImportSummary;
pub use manifest::{DatasetManifest, MANIFEST_FILE, ManifestFile, sha256_file, sha256_hex};

use crate::error::{Error, Result};
use crate::progress::Progress;

/// The source layouts `dgr prepare` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// BEIR: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
    Beir,
    /// MS MARCO passage: `collection.tsv`, `queries.<split>.tsv`, `qrels.<split>.tsv`.
    Msmarco,
    /// DPR: `psgs_w100.tsv`, `<name>-<split>.qa.csv`, biencoder `<name>-<split>.json`.
    Dpr,
    /// Wikipedia Vital Articles lead paragraphs (`summaries_en-us.json`), as known-item search.
    WikiVital,
}

impl DatasetFormat {
    pub const ALL: [DatasetFormat; 4] =
        [DatasetFormat::Beir, DatasetFormat::Msmarco, DatasetFormat::Dpr, DatasetFormat::WikiVital];

    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::Beir => "beir",
            DatasetFormat::Msmarco => "msmarco",
            DatasetFormat::Dpr => "dpr",
            DatasetFormat::WikiVital => "wiki-vital",
        }
    }
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        DatasetFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown dataset format `{s}` (expected beir, msmarco, dpr or wiki-vital)"))
    }
}

/// Percentages of queries per split for sources without splits of their own (wiki-vital).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPercent {
    pub train: u8,
    pub dev: u8,
    pub test: u8,
}

impl Default for SplitPercent {
    fn default() -> Self {
        SplitPercent { train: 80, dev: 10, test: 10 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Skip malformed records and count them in the summary instead of failing.
    pub skip_invalid: bool,
    /// Replace an existing output directory.
    pub overwrite: bool,
    pub split: SplitPercent,
}

/// Imports `input` (a file or directory, per format) into the dataset directory `output`.
pub fn import(
    format: DatasetFormat,
    input: &Path,
    output: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportSummary> {
    let split = options.split;
    if u32::from(split.train) + u32::from(split.dev) + u32::from(split.test) != 100 {
        return Err(Error::Config(format!(
            "split percentages must add up to 100 (train {} + dev {} + test {})",
            split.train, split.dev, split.test
        )));
    }
    if !input.exists() {
        return Err(Error::format(input, "input does not exist"));
    }
    let mut builder = builder::DatasetBuilder::create(output, format, input, options)?;
    match format {
        DatasetFormat::Beir => beir::import(input, &mut builder, progress)?,
        DatasetFormat::Msmarco => msmarco::import(input, &mut builder, progress)?,
        DatasetFormat::Dpr => dpr::import(input, &mut builder, progress)?,
        DatasetFormat::WikiVital => wiki_vital::import(input, &mut builder, progress)?,
    }
    builder.finish()
}

/// Opens `path` for streaming, announcing it to `progress` with its size.
fn open_input<'p>(
    path: &Path,
    label: &str,
    progress: &'p dyn Progress,
) -> Result<std::io::BufReader<crate::progress::CountingReader<'p, std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.begin(label, size, crate::progress::Unit::Bytes);
    Ok(std::io::BufReader::with_capacity(1 << 20, crate::progress::CountingReader::new(file, progress)))
}

/// Split name of files named `<prefix><split><suffix>`, e.g. `queries.dev.tsv`.
fn split_name(path: &Path, prefix: &str, suffix: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let split = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!split.is_empty()).then(|| split.to_string())
}

/// Files in `dir` whose split name parses with [`split_name`], sorted by name.
fn split_files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(String, std::path::PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list directory", e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, "cannot list directory", e))?.path();
        if let Some(split) = split_name(&path, prefix, suffix) {
            found.push((split, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads lines from a streaming reader, yielding 1-based line numbers.
fn numbered_lines<'a, R: std::io::BufRead + 'a>(
    path: &'a Path,
    reader: R,
) -> impl Iterator<Item = Result<(u64, String)>> + 'a {
    reader.lines().enumerate().map(move |(i, line)| {
        line.map(|mut l| {
            if l.ends_with('\r') {
                l.pop();
            }
            (i as u64 + 1, l)
        })
        .map_err(|e| Error::io(path, "cannot read", e))
    })
}
