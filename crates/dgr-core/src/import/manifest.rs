//! `dataset.json`: the manifest of a prepared dataset directory, written last.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{DatasetFormat, ImportSummary};
use crate::atomic::write_atomic;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "dataset.json";
const MANIFEST_FORMAT: &str = "dgr.dataset";
const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// Always `dgr.dataset`.
    pub format: String,
    pub schema_version: u32,
    /// Importer that produced the directory.
    pub source: DatasetFormat,
    /// Input path as given to the importer.
    pub input: String,
    /// Program that wrote it, e.g. `dgr 0.1.0`.
    pub writer: String,
    pub created_unix_s: u64,
    pub files: Vec<ManifestFile>,
    pub summary: ImportSummary,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative to the dataset directory.
    pub path: String,
    /// `corpus`, `queries` or `qrels`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Records (corpus, queries) or judgment lines (qrels).
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl ManifestFile {
    pub(super) fn describe(dir: &Path, name: &str, kind: &str, rows: u64) -> Result<Self> {
        let (bytes, sha256) = sha256_file(&dir.join(name))?;
        Ok(ManifestFile { path: name.to_string(), kind: kind.to_string(), split: None, rows, bytes, sha256 })
    }

    pub(super) fn with_split(mut self, split: &str) -> Self {
        self.split = Some(split.to_string());
        self
    }
}

impl DatasetManifest {
    pub(super) fn new(source: DatasetFormat, input: &str, files: Vec<ManifestFile>, summary: ImportSummary) -> Self {
        DatasetManifest {
            format: MANIFEST_FORMAT.to_string(),
            schema_version: MANIFEST_VERSION,
            source,
            input: input.to_string(),
            writer: format!("dgr {}", env!("CARGO_PKG_VERSION")),
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            files,
            summary,
        }
    }

    pub(super) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format(&path, format!("cannot encode manifest: {e}")))?;
        write_atomic(&path, &json)
    }

    /// Reads and validates `<dir>/dataset.json`; checks that every listed file exists with the
    /// recorded size (full checksums are checked by [`DatasetManifest::verify_checksums`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(&path, "cannot read dataset manifest (is this a prepared dataset directory?)", e))?;
        let manifest: DatasetManifest =
            serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("invalid dataset manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT || manifest.schema_version != MANIFEST_VERSION {
            return Err(Error::format(
                &path,
                format!(
                    "is `{}` version {}, this program reads `{MANIFEST_FORMAT}` version {MANIFEST_VERSION}",
                    manifest.format, manifest.schema_version
                ),
            ));
        }
        for file in &manifest.files {
            let file_path = dir.join(&file.path);
            let bytes = std::fs::metadata(&file_path)
                .map_err(|e| Error::io(&file_path, "listed in dataset.json but unreadable", e))?
                .len();
            if bytes != file.bytes {
                return Err(Error::format(
                    &file_path,
                    format!("has {bytes} bytes, dataset.json records {}", file.bytes),
                ));
            }
        }
        Ok(manifest)
    }

    /// Recomputes every file's sha256 and compares it with the manifest.
    pub fn verify_checksums(&self, dir: &Path) -> Result<()> {
        for file in &self.files {
            let file_path = dir.join(&file.path);
            let (_, sha256) = sha256_file(&file_path)?;
            if sha256 != file.sha256 {
                return Err(Error::format(
                    &file_path,
                    "checksum differs from dataset.json: the file changed or is damaged",
                ));
            }
        }
        Ok(())
    }

    /// The file of `kind` for `split`, if the dataset has one.
    pub fn file(&self, kind: &str, split: Option<&str>) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.kind == kind && f.split.as_deref() == split)
    }

    /// Splits that have queries, in name order.
    pub fn splits(&self) -> Vec<&str> {
        self.files.iter().filter(|f| f.kind == "queries").filter_map(|f| f.split.as_deref()).collect()
    }
}

/// Size and hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
