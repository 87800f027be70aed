//! The whole DGR chain through the `dgr` binary on the wiki-vital fixture: stage 1 → retrieve
//! (train) → teacher → stage 2 → retrieve (dev) with the distilled student. Stage 1 and stage 2
//! are each killed (SIGKILL) after a checkpoint and rerun: each resumes and ends with the weights
//! of an uninterrupted run, and two data-parallel ranks take its steps. Bad inputs are refused with messages that say what to do, and
//! nothing is written half.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Logged, root, tiny_student};

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dgr"));
    command.args(["--config", "job.toml"]).args(args).current_dir(dir).env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

fn output(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = output(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dgr {args:?} failed:\n{stderr}");
    stderr
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = output(dir, args);
    assert_eq!(out.status.code(), Some(1), "dgr {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn steps_logged(dir: &Path, stage: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(dir.join("job").join(stage).join("train_log.jsonl")).unwrap();
    log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `stage2/queries.json`: the queries kept and the loss they train with.
fn stage2_report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("job/stage2/queries.json")).unwrap()).unwrap()
}

/// The lines of `metrics.jsonl` of one kind (`qrels`: dev retrieval; `fixed-lists`).
fn evaluations_of(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    let metrics = std::fs::read_to_string(dir.join("job/metrics.jsonl")).unwrap();
    metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn stage2_steps(dir: &Path) -> Vec<serde_json::Value> {
    steps_logged(dir, "stage2")
}

/// Starts `dgr <command>` and kills it (SIGKILL) as soon as the checkpoint of `step` is complete;
/// returns the steps it had logged. The run must not have finished.
fn kill_after_checkpoint(t: &Path, command_name: &str, env: &[(&str, &str)], stage: &str, step: u64) -> usize {
    let mut child =
        command(t, &[command_name]).envs(env.iter().copied()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let checkpoint = t.join("job").join(stage).join(format!("checkpoints/step-{step:07}/manifest.json"));
    let started = Instant::now();
    while !checkpoint.is_file() {
        assert!(child.try_wait().unwrap().is_none(), "{command_name} ended before its step-{step} checkpoint");
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!t.join("job").join(stage).join("weights/final").exists(), "{command_name} had finished");
    steps_logged(t, stage).len()
}

/// Stage 2 on a training coordinator and two ranks of one query a step; their final weights.
fn two_ranks_of_stage2(t: &Path) -> Vec<f32> {
    let env = [
        ("DGR_TOKEN", "stage2-token"),
        ("DGR_COORDINATOR__BIND", "127.0.0.1:0"),
        ("DGR_RANKS__WORLD_SIZE", "2"),
        ("DGR_TRAIN_DISTILL__ENGINE__BATCH_SIZE", "1"),
    ];
    let json = ["--log-format", "json"];
    let mut serve = command(t, &["coordinator", "--role", "train", "--stage", "train-distill"]);
    serve.args(json).envs(env);
    let mut coordinator = Logged::spawn(serve, "coordinator");
    let listening = coordinator.wait_for(|l| l["fields"]["message"] == "training coordinator listening", 60);
    let url = listening["fields"]["url"].as_str().unwrap().to_string();
    let mut ranks: Vec<Logged> = (0..2)
        .map(|r| {
            let mut train = command(t, &["train-distill", "--coordinator", &url, "--local-rank", &r.to_string()]);
            train.args(json).envs(env);
            Logged::spawn(train, &format!("rank {r}"))
        })
        .collect();
    for rank in &mut ranks {
        assert!(rank.wait_exit(300).success(), "{:#?}", rank.log);
    }
    assert!(coordinator.wait_exit(60).success(), "{:#?}", coordinator.log);
    common::weights(&t.join("job/stage2/weights/final"))
}

#[test]
fn stage_two_trains_on_retrieved_candidates_resumes_after_kill_and_refuses_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let minilm = root().join("assets/minilm");
    tiny_student(&t.join("tiny"));
    let config = format!(
        "[job]\ndir = \"job\"\n\
         [prepare]\ninput = {input:?}\nsplit = {{ train = 60, dev = 40, test = 0 }}\n\
         [index]\ntokenizer = {tokenizer:?}\nsample_rate = 4\n\
         [train_gen]\ninit = {tiny:?}\ntokenizer = {tokenizer:?}\nlabel_smoothing = 0.0\n\
         engine = {{ steps = 80, batch_size = 16, learning_rate = 3e-3, warmup_steps = 5, checkpoint_every = 0 }}\n\
         [retrieve]\nshard_queries = 8\nbatch_queries = 4\nsearch = {{ beam = 5, hits = 40, body_tokens = 4, title_tokens = 12 }}\n\
         scoring = {{ source_weights = {{ title = 0.5, query_span = 4.0 }} }}\n\
         [teacher]\nmodel = {minilm:?}\ncandidates = \"gr\"\ndepth = 40\nshard_queries = 8\n\
         [train_distill]\nmin_negatives = 4\nnegative_pool = 6\nlambda = 1.0\n\
         engine = {{ steps = 12, batch_size = 2, learning_rate = 1e-3, warmup_steps = 2, checkpoint_every = 3, \
         eval_every = 6, eval_queries = 4 }}\n",
        input = s(&root().join("tests/fixtures/wiki-vital/summaries_subset.json")),
        tokenizer = s(&minilm.join("tokenizer.json")),
        tiny = s(&t.join("tiny")),
        minilm = s(&minilm),
    );
    std::fs::write(t.join("job.toml"), config).unwrap();
    ok(t, &["prepare"]);
    ok(t, &["index", "build"]);
    // Stage 1 straight, then killed after its step-40 checkpoint and resumed: the same weights.
    ok(t, &["train-gen"]);
    let straight = std::fs::read(t.join("job/stage1/weights/final/model.safetensors")).unwrap();
    std::fs::remove_dir_all(t.join("job/stage1")).unwrap();
    let every = [("DGR_TRAIN_GEN__ENGINE__CHECKPOINT_EVERY", "20")];
    let killed_at = kill_after_checkpoint(t, "train-gen", &every, "stage1", 40);
    assert!(killed_at < 80, "killed mid-run at step {killed_at}");
    let out = command(t, &["train-gen"]).envs(every).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("resuming"), "{stderr}");
    assert_eq!(steps_logged(t, "stage1").len(), 80);
    let resumed = std::fs::read(t.join("job/stage1/weights/final/model.safetensors")).unwrap();
    assert!(straight == resumed, "the resumed stage-1 run ends with other weights than the uninterrupted one");

    // Stage 2 needs the train candidates first, and says how to make them.
    let stderr = fails(t, &["train-distill"]);
    assert!(stderr.contains("dgr retrieve --split train"), "{stderr}");
    ok(t, &["retrieve", "--split", "train"]);
    let stderr = fails(t, &["train-distill"]);
    assert!(stderr.contains("dgr teacher score"), "{stderr}");
    ok(t, &["teacher", "score", "--split", "train"]);

    // Candidates of another split or another student, or a filter nothing passes: refused,
    // nothing written.
    let manifest = t.join("job/candidates/train/candidates.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replace("\"split\": \"train\"", "\"split\": \"dev\"")).unwrap();
    let stderr = fails(t, &["train-distill"]);
    assert!(stderr.contains("made for split `dev`"), "{stderr}");
    std::fs::write(&manifest, &original).unwrap();
    let other_student = format!("DGR_TRAIN_DISTILL__STUDENT={}", s(&t.join("tiny")));
    let (key, value) = other_student.split_once('=').unwrap();
    let out = command(t, &["train-distill"]).env(key, value).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("retrieved with another student"), "{stderr}");
    let out = command(t, &["train-distill"]).env("DGR_TRAIN_DISTILL__MIN_NEGATIVES", "1000").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no training query passes the stage-2 filter"), "{stderr}");
    assert!(!t.join("job/stage2/checkpoints").exists() && !t.join("job/stage2/weights").exists());

    // An uninterrupted run.
    let stderr = ok(t, &["train-distill"]);
    assert!(stderr.contains("stage-2 training queries"), "{stderr}");
    let report = stage2_report(t);
    assert_eq!((report["format"].as_str(), report["version"].as_u64()), (Some("dgr.stage2-queries"), Some(1)));
    assert!(report["counts"]["kept"].as_u64().unwrap() >= 4, "{report}");
    // The default margins and temperatures are measured on the tiny student's own scores.
    assert_eq!(report["scales"]["from"], "measured", "{report}");
    let measured = report["loss"].clone();
    let margin = measured["margin"].as_f64().unwrap();
    assert!(margin > 0.0 && margin < 1e4, "{report}");
    let ratio = measured["step_margin"].as_f64().unwrap() / margin;
    assert!((ratio - 0.4).abs() < 1e-9, "{report}");
    assert!(stderr.contains("stage-2 ranking loss") && stderr.contains("Measured"), "{stderr}");
    let steps = stage2_steps(t);
    assert_eq!(steps.len(), 12);
    for step in &steps {
        for key in ["loss", "rank_loss", "generation_loss", "violated_pairs", "agreement", "grad_norm", "learning_rate"]
        {
            assert!(step[key].as_f64().is_some_and(f64::is_finite), "{key} in {step}");
        }
        assert!((0.0..=1.0).contains(&step["agreement"].as_f64().unwrap()));
    }
    assert!(steps.iter().any(|s| s["rank_loss"].as_f64().unwrap() > 0.0), "no pair was ever violated");
    assert!(
        steps.iter().any(|s| s["violated_pairs"].as_f64().unwrap() < 20.0),
        "the measured margin leaves some pairs unviolated"
    );
    // Before the first update the student is the one that retrieved the candidates: its passage
    // scores from the stored keys are what retrieval gave them.
    let gap = steps[0]["retrieval_score_gap"].as_f64().unwrap();
    assert!(gap < 1e-4, "student scores differ from retrieval's by {gap} (relative)");
    assert!(steps[11]["retrieval_score_gap"].as_f64().unwrap() > gap, "training moves the scores");
    // Dev retrieval after steps 6 and 12, and the fixed lists (the first 4 kept queries' first
    // draws) before the first step and after steps 6 and 12, in metrics.jsonl.
    let evaluations = evaluations_of(t, "qrels");
    assert_eq!(evaluations.iter().map(|e| e["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![6, 12]);
    for e in &evaluations {
        assert_eq!(
            (e["stage"].as_str(), e["split"].as_str(), e["queries"].as_u64()),
            (Some("train-distill"), Some("dev"), Some(4))
        );
        assert!(e["metrics"]["recall@5"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)), "{e}");
    }
    let fixed = evaluations_of(t, "fixed-lists");
    assert_eq!(fixed.iter().map(|e| e["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 6, 12]);
    for e in &fixed {
        assert_eq!(
            (e["stage"].as_str(), e["split"].as_str(), e["queries"].as_u64()),
            (Some("train-distill"), Some("train"), Some(4))
        );
        assert!(e["metrics"]["agreement"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{e}");
        // Two lists of five passages a query: at most 2 x 10 pairs violated.
        assert!(e["metrics"]["violated_pairs"].as_f64().is_some_and(|v| (0.0..=20.0).contains(&v)), "{e}");
    }
    std::fs::remove_file(t.join("job/metrics.jsonl")).unwrap();
    let straight = std::fs::read(t.join("job/stage2/weights/final/model.safetensors")).unwrap();
    std::fs::rename(t.join("job/stage2"), t.join("stage2-straight")).unwrap();

    // The same run killed once its step-6 checkpoint is in place, then run again with another
    // quantile for the auto margin: the resumed run keeps the margins its checkpoint stored
    // (measured at its start), not a new measurement.
    let killed_at = kill_after_checkpoint(t, "train-distill", &[], "stage2", 6);
    assert!(killed_at < 12, "killed mid-run at step {killed_at}");
    std::fs::remove_file(t.join("job/metrics.jsonl")).unwrap();
    let out =
        command(t, &["train-distill"]).env("DGR_TRAIN_DISTILL__LOSS__AUTO__MARGIN_QUANTILE", "0.9").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("resuming"), "{stderr}");
    let report = stage2_report(t);
    assert_eq!(report["scales"]["from"], "checkpoint", "{report}");
    assert_eq!(report["loss"], measured, "the resumed run trains with the stored margins");
    let steps = stage2_steps(t);
    assert_eq!(steps.iter().map(|s| s["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    // The resumed run measures its fixed lists after its own steps only: the starting point is
    // the first run's.
    let fixed_steps: Vec<u64> = evaluations_of(t, "fixed-lists").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(fixed_steps, vec![12]);
    let resumed = std::fs::read(t.join("job/stage2/weights/final/model.safetensors")).unwrap();
    assert!(straight == resumed, "the resumed run ends with other weights than the uninterrupted one");

    // Two ranks of one query each take the steps of the straight run's two queries a step.
    std::fs::rename(t.join("job/stage2"), t.join("stage2-resumed")).unwrap();
    let two_ranks = two_ranks_of_stage2(t);
    let apart = common::max_difference(&common::weights(&t.join("stage2-resumed/weights/final")), &two_ranks);
    // Only the order of float sums differs (measured 5.5e-6 apart).
    assert!(apart < 2e-5, "1 rank x 2 queries and 2 ranks x 1 are {apart} apart");

    // A dataset without train queries.
    let empty = t.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let config =
        std::fs::read_to_string(t.join("job.toml")).unwrap().replace("train = 60, dev = 40", "train = 0, dev = 100");
    std::fs::write(empty.join("job.toml"), config).unwrap();
    ok(&empty, &["prepare"]);
    let stderr = fails(&empty, &["train-distill"]);
    assert!(stderr.contains("has no judged train queries: stage 2 trains on them"), "{stderr}");

    // The distilled student retrieves the dev queries.
    let student = s(&t.join("job/stage2/weights/final")).to_string();
    let out = command(t, &["retrieve", "--split", "dev"]).env("DGR_RETRIEVE__MODEL", &student).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dgr_core::trec::read_run(&t.join("job/runs/gr-dev.trec")).unwrap();
    assert!(!run.rankings.is_empty());
}
