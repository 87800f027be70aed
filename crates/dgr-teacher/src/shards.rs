//! Rank-list shards: a range of the candidate set scored by the teacher and written as one
//! `dgr.rank-list` file with its provenance, and whole sets written by one process.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use dgr_core::arrow_file::write_records;
use dgr_core::atomic::StagingDir;
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_core::rank_lists::{MANIFEST_FILE, RankList, SET_FORMAT, SET_VERSION, meta};
use dgr_core::shards::{ShardEntry, ShardManifest, shard_file_name, shard_ranges};

use crate::candidates::{CandidateSet, Dataset};
use crate::error::{Result, TeacherError};
use crate::teacher::{Candidates, Teacher};

/// What produced a set of rank lists; stored in every shard's schema metadata and in the
/// manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub teacher: String,
    pub teacher_sha256: String,
    pub candidate_source: String,
    pub split: String,
}

impl Provenance {
    pub fn of(teacher: &Teacher, candidates: &CandidateSet) -> Self {
        Provenance {
            teacher: teacher.spec().name(),
            teacher_sha256: teacher.weights_sha256().to_string(),
            candidate_source: candidates.source.clone(),
            split: candidates.split.clone(),
        }
    }

    /// The manifest of a complete set made of `shards`.
    pub fn manifest(&self, shards: Vec<ShardEntry>) -> ShardManifest {
        let fields = serde_json::json!({
            "teacher": self.teacher,
            "teacher_sha256": self.teacher_sha256,
            "candidate_source": self.candidate_source,
            "program": concat!("dgr ", env!("CARGO_PKG_VERSION")),
        });
        ShardManifest {
            format: SET_FORMAT.into(),
            version: SET_VERSION,
            split: self.split.clone(),
            queries: shards.iter().map(|s| s.queries).sum(),
            shards,
            provenance: fields.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// Scores queries `first..end` of the candidate set.
pub fn score_range(
    teacher: &Teacher,
    dataset: &Dataset,
    candidates: &CandidateSet,
    first: usize,
    end: usize,
    cancel: &AtomicBool,
) -> Result<Vec<RankList>> {
    if first > end || end > candidates.len() {
        return Err(TeacherError::Range { first, end, len: candidates.len() });
    }
    let lists = &candidates.lists[first..end];
    let missing = |what: &str, id: &str| TeacherError::Candidates {
        source_name: candidates.source.clone(),
        message: format!("{what} `{id}` is not in the dataset (candidates from another dataset?)"),
    };
    let mut texts = Vec::with_capacity(lists.len());
    for list in lists {
        let query = dataset.query(&list.query_id).ok_or_else(|| missing("query", &list.query_id))?;
        let passages = list
            .passage_ids
            .iter()
            .map(|id| dataset.passage_text(id).ok_or_else(|| missing("passage", id)))
            .collect::<Result<Vec<_>>>()?;
        texts.push((query.text.as_str(), passages));
    }
    let pairs: Vec<Candidates<'_>> = texts.iter().map(|(q, ps)| Candidates { query: q, passages: ps }).collect();
    let scores = teacher.score(&pairs, cancel)?;
    Ok(lists
        .iter()
        .zip(scores)
        .map(|(list, scores)| {
            RankList::new(
                list.query_id.clone(),
                list.passage_ids.clone(),
                list.scores.clone(),
                scores,
                dataset.labels(&list.query_id, &list.passage_ids),
            )
        })
        .collect())
}

/// Writes shard `shard` (queries from `first`) to `path` (temp + rename); returns its entry
/// with the file name of `path`.
pub fn write_shard(
    path: &Path,
    rows: Vec<RankList>,
    provenance: &Provenance,
    shard: usize,
    first: usize,
) -> Result<ShardEntry> {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).to_string();
    let (shard, first, count) = (shard.to_string(), first.to_string(), rows.len().to_string());
    let metadata = [
        (meta::TEACHER, provenance.teacher.as_str()),
        (meta::TEACHER_SHA256, provenance.teacher_sha256.as_str()),
        (meta::CANDIDATE_SOURCE, provenance.candidate_source.as_str()),
        (meta::SPLIT, provenance.split.as_str()),
        (meta::SHARD, shard.as_str()),
        (meta::FIRST_QUERY, first.as_str()),
        (meta::QUERIES, count.as_str()),
        (meta::CREATED, created.as_str()),
    ];
    let queries = write_records(path, &metadata, rows)?;
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(ShardEntry { file, queries, sha256: sha256_file(path)?.1 })
}

/// Scores the whole candidate set in one process into `out` (replaced as a whole, manifest
/// last).
pub fn score_set(
    teacher: &Teacher,
    dataset: &Dataset,
    candidates: &CandidateSet,
    per_shard: usize,
    out: &Path,
    progress: &dyn Progress,
) -> Result<ShardManifest> {
    let provenance = Provenance::of(teacher, candidates);
    let staging = StagingDir::create(out, true)?;
    let ranges = shard_ranges(candidates.len(), per_shard);
    let never = AtomicBool::new(false);
    progress.begin("teacher", candidates.pairs(0, candidates.len()) as u64, Unit::Items);
    let mut entries = Vec::with_capacity(ranges.len());
    for (n, &(first, end)) in ranges.iter().enumerate() {
        let rows = score_range(teacher, dataset, candidates, first, end, &never)?;
        entries.push(write_shard(&staging.path().join(shard_file_name(n)), rows, &provenance, n, first)?);
        progress.advance(candidates.pairs(first, end) as u64);
    }
    progress.finish();
    let manifest = provenance.manifest(entries);
    manifest.write(staging.path(), MANIFEST_FILE)?;
    staging.commit()?;
    Ok(manifest)
}

/// Writes rank lists computed elsewhere (an import) as a set into `out` (replaced as a whole,
/// manifest last).
pub fn write_set(out: &Path, provenance: &Provenance, rows: Vec<RankList>, per_shard: usize) -> Result<ShardManifest> {
    let staging = StagingDir::create(out, true)?;
    let mut entries = Vec::new();
    let mut rows = rows.into_iter();
    for (n, (first, end)) in shard_ranges(rows.len(), per_shard).into_iter().enumerate() {
        let shard: Vec<RankList> = rows.by_ref().take(end - first).collect();
        entries.push(write_shard(&staging.path().join(shard_file_name(n)), shard, provenance, n, first)?);
    }
    let manifest = provenance.manifest(entries);
    manifest.write(staging.path(), MANIFEST_FILE)?;
    staging.commit()?;
    Ok(manifest)
}
