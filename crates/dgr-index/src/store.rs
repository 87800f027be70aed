//! An index on disk: `index.bin` (the index, bincode) and `index.json` (its manifest: format,
//! version, what it was built from, size and checksum). The directory is written under a
//! temporary name and renamed into place; opening checks the manifest and the checksum.

use std::path::Path;

use dgr_core::atomic::{StagingDir, write_atomic};
use dgr_core::import::sha256_file;
use serde::{Deserialize, Serialize};

use crate::corpus::CorpusIndex;
use crate::error::IndexError;

pub const FORMAT: &str = "dgr.fm-index";
pub const VERSION: u32 = 2;
pub const MANIFEST_FILE: &str = "index.json";
pub const INDEX_FILE: &str = "index.bin";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexManifest {
    pub format: String,
    pub version: u32,
    /// Tokens in the corpus (N of the key weights), separators not counted.
    pub tokens: u64,
    pub passages: u64,
    pub vocab_size: u32,
    pub sample_rate: u64,
    /// SHA-256 of the `tokenizer.json` that tokenised the corpus: queries must use the same.
    pub tokenizer_sha256: String,
    /// SHA-256 of the `corpus.arrow` indexed.
    pub corpus_sha256: String,
    pub index_bytes: u64,
    pub index_sha256: String,
    pub program: String,
}

/// Where an index came from, recorded in its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub tokenizer_sha256: String,
    pub corpus_sha256: String,
}

/// Writes `index` to `dir` (replacing what is there) and returns its manifest.
pub fn save(index: &CorpusIndex, dir: &Path, provenance: &Provenance) -> Result<IndexManifest, IndexError> {
    let staging = StagingDir::create(dir, true)?;
    let bin = staging.path().join(INDEX_FILE);
    let file = std::fs::File::create(&bin).map_err(|e| dgr_core::Error::io(&bin, "cannot create", e))?;
    let mut writer = std::io::BufWriter::new(file);
    bincode::serialize_into(&mut writer, index)
        .map_err(|e| IndexError::Format { path: bin.clone(), message: format!("cannot serialise the index: {e}") })?;
    let file = writer.into_inner().map_err(|e| dgr_core::Error::io(&bin, "cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| dgr_core::Error::io(&bin, "cannot sync", e))?;
    let (index_bytes, index_sha256) = sha256_file(&bin)?;
    let manifest = IndexManifest {
        format: FORMAT.into(),
        version: VERSION,
        tokens: index.total_tokens(),
        passages: index.passages() as u64,
        vocab_size: index.vocab_size(),
        sample_rate: index.sample_rate(),
        tokenizer_sha256: provenance.tokenizer_sha256.clone(),
        corpus_sha256: provenance.corpus_sha256.clone(),
        index_bytes,
        index_sha256,
        program: concat!("dgr ", env!("CARGO_PKG_VERSION")).into(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| IndexError::Build(e.to_string()))?;
    write_atomic(&staging.path().join(MANIFEST_FILE), &json)?;
    staging.commit()?;
    Ok(manifest)
}

/// Reads the manifest of the index in `dir`, checking its format and version.
pub fn read_manifest(dir: &Path) -> Result<IndexManifest, IndexError> {
    let path = dir.join(MANIFEST_FILE);
    let format_error = |message: String| IndexError::Format { path: path.clone(), message };
    let text =
        std::fs::read_to_string(&path).map_err(|e| dgr_core::Error::io(&path, "cannot read index manifest", e))?;
    let manifest: IndexManifest =
        serde_json::from_str(&text).map_err(|e| format_error(format!("not an index manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(format_error(format!("format is {:?}, expected {FORMAT:?}", manifest.format)));
    }
    if manifest.version != VERSION {
        return Err(format_error(format!(
            "version {} is not supported (this program reads {VERSION})",
            manifest.version
        )));
    }
    Ok(manifest)
}

/// Opens the index in `dir`: manifest checked, then the index file's size and checksum.
pub fn open(dir: &Path) -> Result<(CorpusIndex, IndexManifest), IndexError> {
    let manifest = read_manifest(dir)?;
    let bin = dir.join(INDEX_FILE);
    let (bytes, sha) = sha256_file(&bin)?;
    if bytes != manifest.index_bytes || sha != manifest.index_sha256 {
        return Err(IndexError::Format {
            path: bin,
            message: format!(
                "does not match its manifest ({bytes} bytes, sha256 {sha}; manifest: {} bytes, sha256 {}): rebuild the index",
                manifest.index_bytes, manifest.index_sha256
            ),
        });
    }
    let file = std::fs::File::open(&bin).map_err(|e| dgr_core::Error::io(&bin, "cannot open", e))?;
    let index: CorpusIndex = bincode::deserialize_from(std::io::BufReader::new(file))
        .map_err(|e| IndexError::Format { path: bin.clone(), message: format!("cannot read the index: {e}") })?;
    if index.total_tokens() != manifest.tokens || index.passages() as u64 != manifest.passages {
        return Err(IndexError::Format { path: bin, message: "index contents disagree with the manifest".into() });
    }
    Ok((index, manifest))
}
