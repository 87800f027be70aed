//! End-to-end tests of the `dgr` binary on the real-format fixtures in tests/fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dgr_core::trec::{read_qrels, read_run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn dgr(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgr"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = dgr(dir, args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "dgr {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = dgr(dir, args);
    assert_eq!(out.status.code(), Some(1), "dgr {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn prepare_bm25_and_eval_compose_and_eval_matches_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data");
    ok(t, &["prepare", "--format", "msmarco", s(&fixtures().join("msmarco")), s(&data)]);
    assert!(data.join("dataset.json").is_file());
    ok(t, &["bm25", "index", "--corpus", s(&data.join("corpus.arrow")), "--index-dir", "idx"]);
    let run = t.join("train.trec");
    ok(
        t,
        &[
            "bm25",
            "search",
            "--index-dir",
            "idx",
            "--queries",
            s(&data.join("queries-train.arrow")),
            "--run",
            s(&run),
            "--top-k",
            "7",
        ],
    );
    let parsed = read_run(&run).unwrap();
    assert_eq!(parsed.rankings.len(), 31);
    assert!(parsed.rankings.values().all(|docs| !docs.is_empty() && docs.len() <= 7));

    let qrels = data.join("qrels-train.tsv");
    let (stdout, _) = ok(t, &["eval", "--run", s(&run), "--qrels", s(&qrels), "--recall-at", "1,5"]);
    assert!(stdout.contains("recall@5") && stdout.contains("mrr@10") && stdout.contains("ndcg@10"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("train.trec.eval.json")).unwrap()).unwrap();
    let expected = dgr_eval::evaluate_qrels(&parsed, &read_qrels(&qrels).unwrap(), &[1, 5]);
    assert_eq!(json["qrels"]["queries"], 31);
    for (name, value) in &expected.metrics {
        let reported = json["qrels"]["metrics"][name].as_f64().unwrap();
        assert!((reported - value).abs() < 1e-12, "{name}: {reported} vs {value}");
    }
}

#[test]
fn answer_hit_eval_on_dpr_questions() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(t, &["prepare", "--format", "dpr", s(&fixtures().join("dpr")), "data"]);
    ok(t, &["bm25", "index", "--corpus", "data/corpus.arrow", "--index-dir", "idx"]);
    ok(t, &["bm25", "search", "--index-dir", "idx", "--queries", "data/queries-dev.arrow", "--run", "dev.trec"]);
    let (stdout, _) = ok(
        t,
        &[
            "eval",
            "--run",
            "dev.trec",
            "--queries",
            "data/queries-dev.arrow",
            "--corpus",
            "data/corpus.arrow",
            "--out",
            "m.json",
        ],
    );
    assert!(stdout.contains("answer_hit@5"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.join("m.json")).unwrap()).unwrap();
    assert_eq!(json["answers"]["queries"], 3);
    // Recount by hand: a query hits at k if one of its top k passages contains an answer.
    let corpus: Vec<dgr_core::Passage> = dgr_core::arrow_file::read_records(&t.join("data/corpus.arrow")).unwrap();
    let queries: Vec<dgr_core::Query> = dgr_core::arrow_file::read_records(&t.join("data/queries-dev.arrow")).unwrap();
    let run = read_run(&t.join("dev.trec")).unwrap();
    for k in [5, 20, 100] {
        let hits = queries
            .iter()
            .filter(|q| {
                run.rankings.get(&q.id).is_some_and(|docs| {
                    docs.iter().take(k).any(|d| {
                        let text = &corpus.iter().find(|p| p.id == d.doc_id).unwrap().text;
                        dgr_eval::has_answer(&q.answers, text)
                    })
                })
            })
            .count();
        let reported = json["answers"]["metrics"][format!("answer_hit@{k}")].as_f64().unwrap();
        assert!((reported - hits as f64 / 3.0).abs() < 1e-12, "answer_hit@{k}: {reported} vs {hits}/3");
    }
}

#[test]
fn run_executes_the_configured_pipeline_and_reuses_finished_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let config = t.join("job.toml");
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    std::fs::write(
        &config,
        format!("[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\n[eval]\nsplits = [\"train\", \"dev\"]\n", s(&input)),
    )
    .unwrap();

    let (stdout, stderr) = ok(t, &["run", "--config", "job.toml", "--until", "bm25"]);
    assert!(stdout.contains("== wiki-vital job in job: prepare"), "{stdout}");
    let table: Vec<&str> = stdout.lines().skip(2).collect();
    assert!(table[0].starts_with("bm25   train  qrels") && table[1].starts_with("bm25   dev    qrels"), "{stdout}");
    assert!(!stderr.contains("up to date"), "{stderr}");
    let metrics = std::fs::read_to_string(t.join("job/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert_eq!((first["system"].as_str(), first["split"].as_str()), (Some("bm25"), Some("train")));
    assert_eq!(first["queries"], 31);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("job/results.json")).unwrap()).unwrap();
    assert_eq!(results["rows"][0]["metrics"], first["metrics"]);
    assert!(t.join("job/runs/bm25-dev.trec").is_file());
    let record = |stage: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(t.join(format!("job/stages/{stage}.json"))).unwrap()).unwrap()
    };
    assert_eq!(record("bm25")["state"], "done");

    // Nothing changed: every stage is up to date and nothing is appended.
    let (again, stderr) = ok(t, &["run", "--config", "job.toml", "--until", "bm25"]);
    for stage in ["prepare", "bm25", "eval"] {
        assert!(stderr.contains(&format!("stage {stage}: up to date")), "{stderr}");
    }
    assert!(!stderr.contains(": done in"), "{stderr}");
    assert_eq!(again.lines().skip(1).collect::<Vec<_>>(), stdout.lines().skip(1).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(t.join("job/metrics.jsonl")).unwrap(), metrics);

    // Another BM25 depth: BM25 and the evaluation run again, the dataset stays.
    let prepared = record("prepare");
    let out = Command::new(env!("CARGO_BIN_EXE_dgr"))
        .args(["run", "--config", "job.toml", "--until", "bm25"])
        .current_dir(t)
        .env("DGR_BM25__TOP_K", "5")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(record("prepare"), prepared);
    assert!(stderr.contains("stage bm25: inputs or settings changed since it last ran"), "{stderr}");
    assert!(stderr.contains("stage prepare: up to date"), "{stderr}");
    assert_eq!(stderr.matches(": done in").count(), 2, "bm25 and eval only: {stderr}");
    assert_eq!(std::fs::read_to_string(t.join("job/metrics.jsonl")).unwrap().lines().count(), 4);

    // The generative stages are evaluated on held-out splits only.
    let stderr = fails(t, &["run", "--config", "job.toml", "--until", "retrieve"]);
    assert!(stderr.contains("eval.splits names `train`"), "{stderr}");
}

#[test]
fn bad_input_and_bad_configuration_fail_with_located_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let beir = t.join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    for name in ["corpus.jsonl", "queries.jsonl", "qrels/train.tsv"] {
        std::fs::copy(fixtures().join("beir").join(name), beir.join(name)).unwrap();
    }
    let corpus = beir.join("corpus.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap();
    let broken: Vec<&str> = text.lines().enumerate().map(|(i, l)| if i == 2 { "{broken" } else { l }).collect();
    std::fs::write(&corpus, broken.join("\n")).unwrap();
    let stderr = fails(t, &["prepare", "--format", "beir", s(&beir), "out"]);
    assert!(stderr.contains("corpus.jsonl: line 3: field `record`: malformed JSON"), "{stderr}");
    assert!(!t.join("out").exists());

    let (_, stderr) = ok(t, &["prepare", "--format", "beir", "--skip-invalid", s(&beir), "out"]);
    assert!(stderr.contains("skipped as invalid: record: malformed JSON"), "{stderr}");

    std::fs::write(t.join("bad.toml"), "[bm25]\ntopk = 3\n").unwrap();
    let stderr = fails(t, &["--config", "bad.toml", "bm25", "index"]);
    assert!(stderr.contains("topk") && stderr.contains("bad.toml"), "{stderr}");

    let stderr = fails(t, &["eval", "--run", "nope.trec", "--qrels", "nope.tsv"]);
    assert!(stderr.contains("nope.trec: cannot open"), "{stderr}");
}

#[test]
fn every_shipped_configuration_loads_and_passes_its_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let configs = fixtures().join("../../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // `dgr status` loads and checks the configuration, then shows the job's (no) stages.
            let (stdout, _) = ok(tmp.path(), &["--config", s(&path), "status"]);
            assert!(!stdout.contains("error"), "{}: {stdout}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "demo, wiki-vital and the two cluster configurations");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_, stderr) =
        ok(t, &["--log-format", "json", "prepare", "--format", "msmarco", s(&fixtures().join("msmarco")), "data"]);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string() && value["fields"].is_object(), "{line}");
    }
}

#[test]
fn train_gen_trains_the_student_on_the_prepared_train_split() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let minilm = fixtures().join("../../assets/minilm");
    assert!(minilm.join("model.safetensors").is_file(), "MiniLM weights missing: run scripts/fetch-assets.sh");
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    let config = format!(
        "[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\n[train_gen]\ninit = {:?}\ntokenizer = {:?}\nengine.steps = 3\nengine.batch_size = 2\n\
         engine.checkpoint_every = 0\npairs = {{ titles = 1, spans = 1, pseudo_queries = 0, span_words = 10, unsupervised = false }}\n",
        s(&input),
        s(&minilm),
        s(&minilm.join("tokenizer.json")),
    );
    std::fs::write(t.join("job.toml"), config).unwrap();

    let stderr = fails(t, &["--config", "job.toml", "train-gen"]);
    assert!(stderr.contains("run `dgr prepare` first"), "{stderr}");

    ok(t, &["--config", "job.toml", "prepare"]);
    let (_, stderr) = ok(t, &["--config", "job.toml", "train-gen"]);
    assert!(stderr.contains("stage-1 training pairs, each drawn when a step takes it pairs=62 judged=31"), "{stderr}");
    assert!(stderr.contains("warm-starting a BERT2BERT student from BERT"), "{stderr}");
    let log = std::fs::read_to_string(t.join("job/stage1/train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    for line in log.lines() {
        let step: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(step["loss"].as_f64().unwrap().is_finite() && step["learning_rate"].as_f64().unwrap() > 0.0);
    }
    assert!(t.join("job/stage1/weights/final/model.safetensors").is_file());
    assert!(t.join("job/stage1/weights/final/config.json").is_file());

    // Over-long pairs: cut with a warning by default, refused under `overlong = "error"`, and
    // limits beyond the position table are refused before any work.
    // Pairs are drawn when a step takes them, so these runs take a step of their own (a job of
    // their own, sharing the prepared data).
    let with = |extra: &str| {
        let edited = std::fs::read_to_string(t.join("job.toml"))
            .unwrap()
            .replace("engine.steps = 3\n", extra)
            .replace("dir = \"job\"", "dir = \"job-cut\"");
        std::fs::write(t.join("edited.toml"), edited).unwrap();
    };
    std::fs::create_dir_all(t.join("job-cut")).unwrap();
    std::os::unix::fs::symlink(t.join("job/data"), t.join("job-cut/data")).unwrap();
    with("engine.steps = 1\nmax_source_tokens = 6\n");
    let (_, stderr) = ok(t, &["--config", "edited.toml", "train-gen", "--fresh"]);
    assert!(
        stderr.contains("training pairs are cut to the token limits") && stderr.contains("source_limit=6"),
        "{stderr}"
    );
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("job-cut/stage1/train_log.jsonl")).unwrap()).unwrap();
    assert!(step["truncated"].as_f64().is_some_and(|share| share > 0.0 && share <= 1.0), "{step}");
    with("engine.steps = 1\nmax_source_tokens = 6\noverlong = \"error\"\n");
    let stderr = fails(t, &["--config", "edited.toml", "train-gen", "--fresh"]);
    assert!(stderr.contains("longer than 6 tokens"), "{stderr}");
    // A saved student continues training: its weights load as they are (no warm start).
    let saved = t.join("job/stage1/weights/final");
    let edited = std::fs::read_to_string(t.join("job.toml"))
        .unwrap()
        .replace(&format!("init = {:?}", s(&minilm)), &format!("init = {:?}", s(&saved)))
        .replace("engine.steps = 3\n", "engine.steps = 1\n")
        .replace("dir = \"job\"", "dir = \"job2\"");
    std::fs::write(t.join("continued.toml"), edited).unwrap();
    std::fs::create_dir_all(t.join("job2")).unwrap();
    copy_dir(&t.join("job/data"), &t.join("job2/data"));
    let (_, stderr) = ok(t, &["--config", "continued.toml", "train-gen"]);
    assert!(stderr.contains("continuing a saved BERT2BERT student"), "{stderr}");
    assert!(t.join("job2/stage1/weights/final/model.safetensors").is_file());

    with("engine.steps = 1\nmax_source_tokens = 4096\n");
    let stderr = fails(t, &["--config", "edited.toml", "train-gen"]);
    assert!(stderr.contains("exceed the model's 512 positions"), "{stderr}");

    // A GPU asked for where there is none (no `cuda` build, or no device): a message, no panic.
    let on_gpu = std::fs::read_to_string(t.join("job.toml")).unwrap() + "[device]\nkind = \"cuda\"\n";
    std::fs::write(t.join("gpu.toml"), on_gpu).unwrap();
    let stderr = fails(t, &["--config", "gpu.toml", "train-gen"]);
    assert!(stderr.contains("CUDA") && !stderr.contains("panicked"), "{stderr}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn index_build_and_inspect_find_titles_in_their_passages() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tokenizer = fixtures().join("../../assets/minilm/tokenizer.json");
    assert!(tokenizer.is_file(), "MiniLM tokenizer missing: run scripts/fetch-assets.sh");
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    let config = format!(
        "[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\n[index]\ntokenizer = {:?}\nsample_rate = 4\n",
        s(&input),
        s(&tokenizer)
    );
    std::fs::write(t.join("job.toml"), config).unwrap();
    ok(t, &["--config", "job.toml", "prepare"]);
    let (_, stderr) = ok(t, &["--config", "job.toml", "index", "build"]);
    assert!(stderr.contains("index built"), "{stderr}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("job/index/index.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "dgr.fm-index");
    assert_eq!(manifest["passages"], 40);

    // A title with its closing mark occurs in its own passage (the MINDER layout).
    let (stdout, _) = ok(t, &["--config", "job.toml", "index", "inspect", "African art @@"]);
    assert!(stdout.contains("passage African_art at token 0"), "{stdout}");
    let (stdout, _) = ok(t, &["--config", "job.toml", "index", "inspect", "zzqx unlikely words"]);
    assert!(stdout.contains("occurrences: 0"), "{stdout}");

    // Another tokenizer than the index's is refused.
    let other = t.join("other-tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer).unwrap().replacen("[UNK]", "[UNKNOWN]", 1);
    std::fs::write(&other, text).unwrap();
    let edited = std::fs::read_to_string(t.join("job.toml")).unwrap().replace(s(&tokenizer), s(&other));
    std::fs::write(t.join("other.toml"), edited).unwrap();
    let stderr = fails(t, &["--config", "other.toml", "index", "inspect", "art"]);
    assert!(stderr.contains("is not the tokenizer the index"), "{stderr}");
}

#[test]
fn retrieve_writes_a_run_and_candidates_backed_by_the_index() {
    use dgr_core::candidates::QueryCandidates;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let minilm = fixtures().join("../../assets/minilm");
    assert!(minilm.join("model.safetensors").is_file(), "MiniLM weights missing: run scripts/fetch-assets.sh");
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    let config = format!(
        "[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\nsplit = {{ train = 60, dev = 40, test = 0 }}\n\
         [index]\ntokenizer = {:?}\nsample_rate = 4\n\
         [train_gen]\ninit = {:?}\ntokenizer = {:?}\nengine.steps = 30\nengine.batch_size = 4\n\
         engine.learning_rate = 5e-4\nengine.warmup_steps = 0\nengine.checkpoint_every = 0\n\
         pairs = {{ unsupervised = false }}\n\
         [retrieve]\nshard_queries = 2\nbatch_queries = 2\nsearch = {{ beam = 3, hits = 5, body_tokens = 4, title_tokens = 8 }}\n\
         [coordinator]\nbind = \"127.0.0.1:0\"\nlinger_seconds = 5.0\n",
        s(&input),
        s(&minilm.join("tokenizer.json")),
        s(&minilm),
        s(&minilm.join("tokenizer.json")),
    );
    std::fs::write(t.join("job.toml"), config).unwrap();
    ok(t, &["--config", "job.toml", "prepare"]);
    let stderr = fails(t, &["--config", "job.toml", "retrieve"]);
    assert!(stderr.contains("dgr index build"), "no index yet: {stderr}");
    ok(t, &["--config", "job.toml", "index", "build"]);
    let stderr = fails(t, &["--config", "job.toml", "retrieve"]);
    assert!(stderr.contains("dgr train-gen"), "no student yet: {stderr}");
    ok(t, &["--config", "job.toml", "train-gen"]);

    let (_, stderr) = ok(t, &["--config", "job.toml", "retrieve", "--split", "dev", "--limit", "5", "--threads", "2"]);
    assert!(stderr.contains("retrieved") && stderr.contains("model_ms_p50"), "{stderr}");
    let run = dgr_core::trec::read_run(&t.join("job/runs/gr-dev.trec")).unwrap();
    // 30 steps teach the student little, but enough for some keys to beat their corpus
    // frequency (a query whose keys all weigh 0 gets no passages).
    assert!(!run.rankings.is_empty() && run.rankings.len() <= 5);
    assert!(run.rankings.values().all(|r| r.len() <= 5));

    // Shards of 2 queries, listed with checksums; every key is where the shard says it is.
    let out = t.join("job/candidates/dev");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("candidates.json")).unwrap()).unwrap();
    assert_eq!(manifest["queries"], 5);
    let shards = manifest["shards"].as_array().unwrap();
    assert_eq!(shards.iter().map(|s| s["queries"].as_u64().unwrap()).collect::<Vec<_>>(), vec![2, 2, 1]);
    let (index, _) = dgr_index::store::open(&t.join("job/index")).unwrap();
    let passage_index: std::collections::HashMap<&str, u32> =
        (0..index.passages() as u32).map(|p| (index.passage_id(p).unwrap(), p)).collect();
    let mut rows = Vec::new();
    for shard in shards {
        let path = out.join(shard["file"].as_str().unwrap());
        let (_, sha) = dgr_core::import::sha256_file(&path).unwrap();
        assert_eq!(shard["sha256"], sha.as_str());
        rows.extend(dgr_core::arrow_file::read_records::<QueryCandidates>(&path).unwrap());
    }
    assert_eq!(rows.len(), 5);
    let sources: std::collections::HashSet<&str> =
        rows.iter().flat_map(|r| r.keys.iter().map(|k| k.source.as_str())).collect();
    assert!(sources.contains("body") && sources.contains("query-span"), "{sources:?}");
    for row in &rows {
        let ranked = run.rankings.get(&row.query_id).cloned().unwrap_or_default();
        assert_eq!(ranked.iter().map(|d| d.doc_id.clone()).collect::<Vec<_>>(), row.passage_ids);
        assert!(row.scores.windows(2).all(|w| w[0] >= w[1]), "best first");
        for key in &row.keys {
            let start = if key.source == "title" { index.passage_start() } else { index.root() };
            let prefix = key.tokens.iter().fold(start, |p, &t| index.extend(&p, t));
            assert_eq!(prefix.count(), key.count, "{key:?}");
            assert!(key.weight > 0.0 && key.log_prob <= 0.0, "{key:?}");
        }
        for ((keys, scores), total) in row.passage_keys.iter().zip(&row.passage_key_scores).zip(&row.scores) {
            // Each key adds at most its weight (coverage only scales down); unigrams the rest.
            for (&k, &score) in keys.iter().zip(scores) {
                assert!(score > 0.0 && score <= row.keys[k as usize].weight + 1e-9);
            }
            assert!(scores.iter().sum::<f64>() <= total + 1e-9);
        }
        for (passage, keys) in row.passage_ids.iter().zip(&row.passage_keys) {
            let text = index.passage_tokens(passage_index[passage.as_str()]);
            for &k in keys {
                let tokens = &row.keys[k as usize].tokens;
                assert!(text.windows(tokens.len()).any(|w| w == tokens.as_slice()), "key {k} not in {passage}");
            }
        }
    }
    source_weights_scale_keys(t, &rows);
    distributed_retrieve_equals_one_process(t);
}

/// The same queries retrieved with query-span keys weighted 96 and title keys 0: query-span keys
/// weigh 3 times what they weighed under the default 32, body keys the same, and no title key is left.
fn source_weights_scale_keys(t: &Path, before: &[dgr_core::candidates::QueryCandidates]) {
    let out = Command::new(env!("CARGO_BIN_EXE_dgr"))
        .args(["--config", "job.toml", "retrieve", "--split", "dev", "--limit", "5"])
        .current_dir(t)
        // Three times the embedded default (configs/demo.toml weighs query spans 32).
        .env("DGR_RETRIEVE__SCORING__SOURCE_WEIGHTS__QUERY_SPAN", "96")
        .env("DGR_RETRIEVE__SCORING__SOURCE_WEIGHTS__TITLE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = t.join("job/candidates/dev");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("candidates.json")).unwrap()).unwrap();
    let mut after = Vec::new();
    for shard in manifest["shards"].as_array().unwrap() {
        let path = dir.join(shard["file"].as_str().unwrap());
        after.extend(dgr_core::arrow_file::read_records::<dgr_core::candidates::QueryCandidates>(&path).unwrap());
    }
    let weight_of = |rows: &[dgr_core::candidates::QueryCandidates], source: &str| {
        let mut weights = std::collections::BTreeMap::new();
        for row in rows {
            for key in row.keys.iter().filter(|k| k.source == source) {
                weights.insert((row.query_id.clone(), key.tokens.clone()), key.weight);
            }
        }
        weights
    };
    let (spans_before, spans_after) = (weight_of(before, "query-span"), weight_of(&after, "query-span"));
    assert!(!spans_before.is_empty());
    assert_eq!(spans_before.keys().collect::<Vec<_>>(), spans_after.keys().collect::<Vec<_>>());
    for (key, weight) in &spans_before {
        assert!((spans_after[key] - 3.0 * weight).abs() <= 1e-9 * weight.max(1.0), "{key:?}");
    }
    assert_eq!(weight_of(before, "body"), weight_of(&after, "body"));
    assert!(weight_of(&after, "title").is_empty());
}

/// The whole dev split retrieved by one process, then by a coordinator and two workers: the
/// same candidate rows and run.
fn distributed_retrieve_equals_one_process(t: &Path) {
    use dgr_core::candidates::{CANDIDATES_FORMAT, CANDIDATES_MANIFEST, CANDIDATES_VERSION, QueryCandidates};
    use dgr_core::shards::{ShardManifest, read_shard_set};
    let out = t.join("job/candidates/dev");
    let read = || {
        let manifest = ShardManifest::open(&out, CANDIDATES_MANIFEST, CANDIDATES_FORMAT, CANDIDATES_VERSION).unwrap();
        let rows: Vec<QueryCandidates> = read_shard_set(&out, &manifest).unwrap();
        (rows, std::fs::read_to_string(t.join("job/runs/gr-dev.trec")).unwrap())
    };
    ok(t, &["--config", "job.toml", "retrieve", "--split", "dev"]);
    let (expected, expected_run) = read();
    assert!(expected.len() > 5);

    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dgr"))
            .args(["--config", "job.toml", "--log-format", "json"])
            .args(args)
            .current_dir(t)
            .env_remove("RUST_LOG")
            .env("DGR_TOKEN", "retrieve-test-token")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut coordinator = spawn(&["coordinator", "--role", "retrieve", "--split", "dev", "--overwrite"]);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(coordinator.stderr.take().unwrap()));
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            value["fields"]["url"].as_str().map(str::to_string)
        })
        .expect("the coordinator logs its address");
    let workers: Vec<_> =
        (0..2).map(|_| spawn(&["worker", "--role", "retrieve", "--split", "dev", "--coordinator", &url])).collect();
    let drained = std::thread::spawn(move || lines.map_while(Result::ok).count());
    assert!(coordinator.wait().unwrap().success());
    drained.join().unwrap();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let (found, found_run) = read();
    assert_eq!(found, expected);
    assert_eq!(found_run, expected_run);
}

#[test]
fn teacher_import_reads_dgr_jsonl_and_tsv_into_rank_lists_and_locates_bad_lines() {
    use dgr_core::rank_lists::{MANIFEST_FILE, RankList, SET_FORMAT, SET_VERSION};
    use dgr_core::shards::{ShardManifest, read_shard_set};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let input = fixtures().join("wiki-vital/summaries_subset.json");
    std::fs::write(t.join("job.toml"), format!("[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\n", s(&input))).unwrap();
    ok(t, &["--config", "job.toml", "prepare"]);
    let queries: Vec<dgr_core::Query> =
        dgr_core::arrow_file::read_records(&t.join("job/data/queries-train.arrow")).unwrap();
    let qrels = read_qrels(&t.join("job/data/qrels-train.tsv")).unwrap();
    let (q0, q1) = (&queries[0].id, &queries[1].id);
    let relevant = |q: &str| qrels.judgments[q].keys().next().unwrap().clone();
    let (p0, p1) = (relevant(q0), relevant(q1));
    let read = || {
        let dir = t.join("job/rank_lists/train");
        let manifest = ShardManifest::open(&dir, MANIFEST_FILE, SET_FORMAT, SET_VERSION).unwrap();
        read_shard_set::<RankList>(&dir, &manifest).unwrap()
    };

    // DGR JSONL: ids as strings or numbers, scores as numbers or strings (the reference writes
    // both), blank lines skipped.
    let numeric: u64 = q1.parse().expect("fixture query ids are numbers");
    let jsonl = format!(
        "{{\"id\": \"{q0}\", \"question\": \"q\", \"positive_ctxs\": [{{\"passage_id\": \"{p0}\", \"score\": \"12.5\", \"score_teacher_simlm\": 3.0}}], \"negative_ctxs\": [{{\"passage_id\": \"{p1}\", \"score\": 11.0, \"score_teacher_simlm\": 4.5}}]}}\n\n\
         {{\"id\": {numeric}, \"question\": \"q\", \"positive_ctxs\": [{{\"passage_id\": \"{p1}\", \"score_teacher_simlm\": 1.0}}], \"negative_ctxs\": []}}\n"
    );
    std::fs::write(t.join("scores.jsonl"), &jsonl).unwrap();
    let file = s(&t.join("scores.jsonl")).to_string();
    ok(t, &["--config", "job.toml", "teacher", "import", "--format", "dgr-jsonl", "--input", &file]);
    let lists = read();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].query_id, *q0);
    assert_eq!(lists[0].passage_ids, vec![p0.clone(), p1.clone()]);
    assert_eq!(lists[0].candidate_scores, vec![12.5, 11.0]);
    assert_eq!(lists[0].teacher_ranks, vec![1, 0], "the negative scored higher by the teacher ranks first");
    assert_eq!(lists[0].labels, vec![1, 0]);
    assert_eq!(lists[1].query_id, *q1);
    assert_eq!(lists[1].labels, vec![1]);

    // TSV, grouped by query in file order.
    let tsv = format!("# qid pid score\n{q1}\t{p1}\t0.25\n{q0}\t{p1}\t2\n{q1}\t{p0}\t0.75\n");
    std::fs::write(t.join("scores.tsv"), tsv).unwrap();
    let file = s(&t.join("scores.tsv")).to_string();
    ok(t, &["--config", "job.toml", "teacher", "import", "--format", "tsv", "--input", &file]);
    let lists = read();
    assert_eq!(lists.iter().map(|l| l.query_id.as_str()).collect::<Vec<_>>(), vec![q1.as_str(), q0.as_str()]);
    assert_eq!(lists[0].passage_ids, vec![p1.clone(), p0.clone()]);
    assert_eq!(lists[0].teacher_ranks, vec![1, 0]);
    assert_eq!(lists[0].labels, vec![1, 0]);

    // Bad input names the file, the line and the field.
    std::fs::write(t.join("bad.tsv"), format!("{q0}\t{p0}\t0.5\n{q0}\tno-such-passage\t0.1\n")).unwrap();
    let stderr = fails(t, &["--config", "job.toml", "teacher", "import", "--format", "tsv", "--input", "bad.tsv"]);
    assert!(
        stderr.contains("bad.tsv: line 2: field `pid`: names no passage of the corpus: no-such-passage"),
        "{stderr}"
    );
    std::fs::write(
        t.join("bad.jsonl"),
        format!(r#"{{"id": "{q0}", "positive_ctxs": [{{"passage_id": "{p0}"}}], "negative_ctxs": []}}"#),
    )
    .unwrap();
    let stderr =
        fails(t, &["--config", "job.toml", "teacher", "import", "--format", "dgr-jsonl", "--input", "bad.jsonl"]);
    assert!(stderr.contains("bad.jsonl: line 1: field `positive_ctxs[0].score_teacher_*`: is missing"), "{stderr}");
    // The earlier set is untouched by the failed imports.
    assert_eq!(read().len(), 2);
}
