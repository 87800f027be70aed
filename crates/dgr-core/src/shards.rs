//! Sets of Arrow shards listed by a JSON manifest (`candidates.json`, `rank_lists/.../manifest.json`):
//! the shards in query order, each with its row count and SHA-256. The manifest is written
//! after the shards, so a directory with a manifest is complete; readers check every shard's
//! checksum and row count before trusting its rows.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::arrow_file::{ArrowRecord, RecordReader};
use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::import::sha256_file;

/// The manifest of a shard set. `provenance` holds what produced the shards (model, teacher,
/// candidate source, ...), as flat JSON fields beside the fixed ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// What the set holds, e.g. `dgr.rank-list-shards`.
    pub format: String,
    pub version: u32,
    pub split: String,
    /// Rows over all shards.
    pub queries: u64,
    pub shards: Vec<ShardEntry>,
    #[serde(flatten)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
}

/// One shard of a set; shards are listed in query order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the set's directory.
    pub file: String,
    /// Rows (one per query).
    pub queries: u64,
    pub sha256: String,
}

impl ShardManifest {
    /// Writes the manifest as `dir/name` (temp + rename): the last step of writing a set.
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::format(&path, e.to_string()))?;
        write_atomic(&path, &json)
    }

    /// Reads `dir/name` and checks that it describes a `format` set of `version`, that the
    /// shard rows add up and that every shard file exists.
    pub fn open(dir: &Path, name: &str, format: &str, version: u32) -> Result<Self> {
        let path = dir.join(name);
        let text = std::fs::read(&path).map_err(|e| {
            Error::io(&path, "cannot read the shard manifest (is the set complete? it is written last)", e)
        })?;
        let manifest: ShardManifest =
            serde_json::from_slice(&text).map_err(|e| Error::format(&path, format!("not a shard manifest: {e}")))?;
        if manifest.format != format {
            return Err(Error::format(&path, format!("lists `{}` shards, expected `{format}`", manifest.format)));
        }
        if manifest.version != version {
            return Err(Error::format(
                &path,
                format!(
                    "`{format}` version {} is not supported (this program reads version {version})",
                    manifest.version
                ),
            ));
        }
        let rows: u64 = manifest.shards.iter().map(|s| s.queries).sum();
        if rows != manifest.queries {
            return Err(Error::format(
                &path,
                format!("shards hold {rows} rows, the manifest says {}", manifest.queries),
            ));
        }
        for shard in &manifest.shards {
            if shard.file.contains('/') || shard.file.contains('\\') || shard.file.starts_with('.') {
                return Err(Error::format(&path, format!("shard file `{}` is not a plain file name", shard.file)));
            }
            if !dir.join(&shard.file).is_file() {
                return Err(Error::format(&path, format!("lists `{}`, which is missing", shard.file)));
            }
        }
        Ok(manifest)
    }

    /// Index of each shard's first query within the set.
    pub fn first_queries(&self) -> Vec<u64> {
        self.shards
            .iter()
            .scan(0u64, |next, shard| {
                let first = *next;
                *next += shard.queries;
                Some(first)
            })
            .collect()
    }
}

/// Checks a shard's checksum and row count, then reads its records.
pub fn read_verified_shard<T: ArrowRecord>(dir: &Path, shard: &ShardEntry) -> Result<Vec<T>> {
    let path = dir.join(&shard.file);
    verify_checksum(&path, &shard.sha256)?;
    let rows = RecordReader::<T>::open(&path)?.read_all()?;
    if rows.len() as u64 != shard.queries {
        return Err(Error::format(&path, format!("holds {} rows, the manifest says {}", rows.len(), shard.queries)));
    }
    Ok(rows)
}

/// Fails unless the file's SHA-256 is `expected`.
pub fn verify_checksum(path: &Path, expected: &str) -> Result<()> {
    let (_, found) = sha256_file(path)?;
    if found != expected {
        return Err(Error::format(
            path,
            format!("checksum mismatch: sha256 {found}, the manifest says {expected} (the file changed or is damaged)"),
        ));
    }
    Ok(())
}

/// Reads every shard of a set, verified, in order.
pub fn read_shard_set<T: ArrowRecord>(dir: &Path, manifest: &ShardManifest) -> Result<Vec<T>> {
    let mut rows = Vec::with_capacity(manifest.queries as usize);
    for shard in &manifest.shards {
        rows.extend(read_verified_shard::<T>(dir, shard)?);
    }
    Ok(rows)
}

/// `shard-NNNNN.arrow`: the name of shard `n` of a set.
pub fn shard_file_name(n: usize) -> String {
    format!("shard-{n:05}.arrow")
}

/// The query ranges `(first, end)` of shards of `per_shard` queries over `queries` queries.
pub fn shard_ranges(queries: usize, per_shard: usize) -> Vec<(usize, usize)> {
    (0..queries).step_by(per_shard.max(1)).map(|first| (first, (first + per_shard).min(queries))).collect()
}
