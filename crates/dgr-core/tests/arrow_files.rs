//! Arrow record files: round trips, provenance metadata, and refusal of foreign or damaged files.

use std::path::Path;

use dgr_core::arrow_file::{FORMAT_KEY, RecordReader, RowReader, VERSION_KEY, read_records, write_records};
use dgr_core::{Error, Passage, Query};

fn passages() -> Vec<Passage> {
    (0..10_000)
        .map(|i| Passage {
            id: format!("p{i}"),
            title: if i % 3 == 0 { String::new() } else { format!("Title {i} — ünïcode") },
            text: format!("text of passage {i}"),
            pseudo_queries: (0..i % 4).map(|j| format!("pq {i}/{j}")).collect(),
        })
        .collect()
}

#[test]
fn corpus_round_trips_across_batches_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.arrow");
    let rows = write_records(&path, &[("dgr.source", "test")], passages()).unwrap();
    assert_eq!(rows, 10_000);
    let reader = RecordReader::<Passage>::open(&path).unwrap();
    assert!(reader.num_batches() > 1, "several batches exercise the row offsets");
    assert_eq!(reader.metadata()[FORMAT_KEY], "dgr.corpus");
    assert_eq!(reader.metadata()[VERSION_KEY], "1");
    assert_eq!(reader.metadata()["dgr.source"], "test");
    assert_eq!(reader.read_all().unwrap(), passages());
    // Nothing but the file itself is left in the directory (the temporary was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("corpus.arrow")]);
}

#[test]
fn rows_are_read_one_at_a_time_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.arrow");
    write_records(&path, &[], passages()).unwrap();
    let mut reader = RecordReader::<Passage>::open(&path).unwrap();
    let mut batch_rows = Vec::new();
    while let Some(batch) = reader.next_batch().unwrap() {
        batch_rows.push(batch.len() as u64);
    }
    assert!(batch_rows.len() > 1);
    let expected = passages();
    let mut rows = RowReader::<Passage>::open(&path, &batch_rows).unwrap();
    assert_eq!(rows.rows(), 10_000);
    // Batch ends and starts, back and forth, and every 7th row.
    let first_of_second = batch_rows[0];
    for row in [0, 9_999, first_of_second - 1, first_of_second, 1, first_of_second + 1]
        .into_iter()
        .chain((0..10_000).step_by(7))
    {
        assert_eq!(rows.get(row).unwrap(), expected[row as usize], "row {row}");
    }
    let message = rows.get(10_000).unwrap_err().to_string();
    assert!(message.contains("has 10000 rows, row 10000 was asked for"), "{message}");
    let message = RowReader::<Passage>::open(&path, &[10_000]).err().unwrap().to_string();
    assert!(message.contains("record batches") && message.contains("1 were counted"), "{message}");
}

#[test]
fn a_queries_file_is_refused_as_a_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queries.arrow");
    let query = Query { id: "q1".into(), text: "what".into(), answers: vec!["a".into()] };
    write_records(&path, &[], vec![query]).unwrap();
    let err = read_records::<Passage>(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("queries.arrow"), "{message}");
    assert!(message.contains("holds `dgr.queries` records, expected `dgr.corpus`"), "{message}");
}

#[test]
fn a_non_arrow_file_and_a_missing_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.arrow");
    std::fs::write(&path, b"{\"not\": \"arrow\"}").unwrap();
    let message = read_records::<Passage>(&path).unwrap_err().to_string();
    assert!(message.contains("not a readable Arrow IPC file"), "{message}");

    let missing = dir.path().join("nope.arrow");
    let err = read_records::<Passage>(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.arrow: cannot open"), "{err}");
}

/// Writes an Arrow file by hand, as another tool might, to test what the reader accepts.
fn write_foreign(path: &Path, metadata: &[(&str, &str)], nullable_text: bool, text: Vec<Option<&str>>) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let n = text.len();
    let list = dgr_core::arrow_file::string_list_column(std::iter::repeat_n(&[][..], n));
    let schema = Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, nullable_text),
            Field::new("pseudo_queries", dgr_core::arrow_file::string_list_type(), false),
        ],
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::HashMap<_, _>>(),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("p{i}")))),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| "t"))),
        Arc::new(StringArray::from(text)),
        list,
    ];
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), columns).unwrap();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

#[test]
fn schema_version_and_nulls_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.arrow");

    write_foreign(&path, &[(FORMAT_KEY, "dgr.corpus"), (VERSION_KEY, "2")], false, vec![Some("a")]);
    let message = read_records::<Passage>(&path).unwrap_err().to_string();
    assert!(message.contains("schema version 2 is not supported"), "{message}");

    write_foreign(&path, &[], false, vec![Some("a")]);
    let message = read_records::<Passage>(&path).unwrap_err().to_string();
    assert!(message.contains("no `dgr.format` schema metadata"), "{message}");

    write_foreign(&path, &[(FORMAT_KEY, "dgr.corpus"), (VERSION_KEY, "1")], true, vec![Some("a"), None]);
    let message = read_records::<Passage>(&path).unwrap_err().to_string();
    assert!(message.contains("row 1: field `text`: is null"), "{message}");

    write_foreign(&path, &[(FORMAT_KEY, "dgr.corpus"), (VERSION_KEY, "1")], false, vec![Some("a"), Some("b")]);
    assert_eq!(read_records::<Passage>(&path).unwrap().len(), 2);
}

fn matched(passage: usize, keys: usize) -> Vec<u32> {
    (0..keys as u32).filter(|k| (*k as usize + passage).is_multiple_of(2)).collect()
}

fn candidates(i: usize) -> dgr_core::candidates::QueryCandidates {
    use dgr_core::candidates::{CandidateKey, QueryCandidates};
    let keys: Vec<CandidateKey> = (0..i % 5)
        .map(|k| CandidateKey {
            tokens: (0..=k as u32).map(|t| t * 7 + i as u32).collect(),
            source: ["title", "body", "query-span", "unigram"][k % 4].into(),
            log_prob: -(k as f64) - 0.5,
            count: (k * i) as u64,
            weight: k as f64 * 1.5,
        })
        .collect();
    let passages = i % 4;
    QueryCandidates {
        query_id: format!("q{i}"),
        passage_ids: (0..passages).map(|p| format!("p{p}")).collect(),
        scores: (0..passages).map(|p| 10.0 - p as f64).collect(),
        passage_keys: (0..passages).map(|p| matched(p, keys.len())).collect(),
        passage_key_scores: (0..passages)
            .map(|p| matched(p, keys.len()).iter().map(|&k| f64::from(k) * 0.25).collect())
            .collect(),
        keys,
    }
}

#[test]
fn candidates_round_trip_and_inconsistent_rows_are_refused() {
    use dgr_core::candidates::QueryCandidates;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.arrow");
    let rows: Vec<QueryCandidates> = (0..5000).map(candidates).collect();
    write_records(&path, &[("dgr.split", "dev")], rows.clone()).unwrap();
    let reader = RecordReader::<QueryCandidates>::open(&path).unwrap();
    assert!(reader.num_batches() > 1);
    assert_eq!(reader.metadata()[FORMAT_KEY], "dgr.candidates");
    assert_eq!(reader.read_all().unwrap(), rows);

    // A key index past the row's keys, and a score list of the wrong length.
    let mut bad = rows[..10].to_vec();
    bad[7].passage_keys[1].push(99);
    bad[7].passage_key_scores[1].push(0.5);
    write_records(&path, &[], bad).unwrap();
    let err = read_records::<QueryCandidates>(&path).unwrap_err().to_string();
    assert!(err.contains("row 7") && err.contains("passage_keys") && err.contains("key index 99"), "{err}");
    let mut bad = rows[..10].to_vec();
    bad[3].scores.pop();
    write_records(&path, &[], bad).unwrap();
    let err = read_records::<QueryCandidates>(&path).unwrap_err().to_string();
    assert!(err.contains("row 3") && err.contains("scores"), "{err}");
    let mut bad = rows[..10].to_vec();
    bad[5].passage_key_scores[0].push(1.0);
    write_records(&path, &[], bad).unwrap();
    let err = read_records::<QueryCandidates>(&path).unwrap_err().to_string();
    assert!(err.contains("row 5") && err.contains("passage_key_scores"), "{err}");
}

fn rank_list(i: usize) -> dgr_core::rank_lists::RankList {
    let n = i % 4 + 1;
    dgr_core::rank_lists::RankList::new(
        format!("q{i}"),
        (0..n).map(|p| format!("p{}", i * 10 + p)).collect(),
        (0..n).map(|p| 10.0 - p as f64).collect(),
        (0..n).map(|p| ((i + p) % 3) as f64 * 0.5).collect(),
        (0..n).map(|p| i32::from(p == 0)).collect(),
    )
}

#[test]
fn rank_lists_derive_ranks_round_trip_and_inconsistent_rows_are_refused() {
    use dgr_core::rank_lists::{RankList, ranks_of};
    // Highest score first; ties keep candidate order.
    assert_eq!(ranks_of(&[0.5, 2.0, 0.5, -1.0]), vec![1, 0, 2, 3]);
    let list = rank_list(5);
    let order = list.teacher_order();
    assert!(order.windows(2).all(|w| list.teacher_scores[w[0]] >= list.teacher_scores[w[1]]));

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shard.arrow");
    let rows: Vec<RankList> = (0..9000).map(rank_list).collect();
    write_records(&path, &[("dgr.teacher", "t")], rows.clone()).unwrap();
    assert_eq!(read_records::<RankList>(&path).unwrap(), rows);

    // Ranks that are not a permutation are refused with the row.
    let mut bad = rank_list(3);
    bad.teacher_ranks[1] = bad.teacher_ranks[0];
    write_records(&path, &[], [rank_list(0), bad]).unwrap();
    let err = read_records::<RankList>(&path).unwrap_err().to_string();
    assert!(err.contains("row 1") && err.contains("teacher_ranks") && err.contains("permutation"), "{err}");
    let mut short = rank_list(2);
    short.labels.pop();
    write_records(&path, &[], [short]).unwrap();
    let err = read_records::<RankList>(&path).unwrap_err().to_string();
    assert!(err.contains("row 0") && err.contains("labels"), "{err}");
}

#[test]
fn shard_sets_verify_manifest_checksums_and_row_counts() {
    use dgr_core::rank_lists::{MANIFEST_FILE, RankList, SET_FORMAT, SET_VERSION};
    use dgr_core::shards::{ShardEntry, ShardManifest, read_shard_set, shard_file_name};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut shards = Vec::new();
    for n in 0..3 {
        let file = shard_file_name(n);
        let rows = write_records(&dir.join(&file), &[], (n * 4..n * 4 + 4).map(rank_list)).unwrap();
        let sha256 = dgr_core::import::sha256_file(&dir.join(&file)).unwrap().1;
        shards.push(ShardEntry { file, queries: rows, sha256 });
    }
    let manifest = ShardManifest {
        format: SET_FORMAT.into(),
        version: SET_VERSION,
        split: "train".into(),
        queries: 12,
        shards,
        provenance: serde_json::Map::new(),
    };
    manifest.write(dir, MANIFEST_FILE).unwrap();
    let opened = ShardManifest::open(dir, MANIFEST_FILE, SET_FORMAT, SET_VERSION).unwrap();
    assert_eq!(opened.first_queries(), vec![0, 4, 8]);
    let rows: Vec<RankList> = read_shard_set(dir, &opened).unwrap();
    assert_eq!(rows, (0..12).map(rank_list).collect::<Vec<_>>());

    // Another format or version, and a manifest whose rows do not add up, are refused.
    let err = ShardManifest::open(dir, MANIFEST_FILE, "dgr.candidate-shards", 1).unwrap_err().to_string();
    assert!(err.contains("expected `dgr.candidate-shards`"), "{err}");
    let err = ShardManifest::open(dir, MANIFEST_FILE, SET_FORMAT, 2).unwrap_err().to_string();
    assert!(err.contains("version 1 is not supported"), "{err}");
    let mut wrong = manifest.clone();
    wrong.queries = 13;
    wrong.write(dir, "wrong.json").unwrap();
    let err = ShardManifest::open(dir, "wrong.json", SET_FORMAT, SET_VERSION).unwrap_err().to_string();
    assert!(err.contains("shards hold 12 rows, the manifest says 13"), "{err}");

    // A shard changed after the manifest was written fails its checksum, naming the file.
    write_records(&dir.join(shard_file_name(1)), &[], (4..8).map(rank_list).rev()).unwrap();
    let err = read_shard_set::<RankList>(dir, &opened).unwrap_err().to_string();
    assert!(err.contains("shard-00001.arrow") && err.contains("checksum mismatch"), "{err}");
}
