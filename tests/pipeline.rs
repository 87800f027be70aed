//! `dgr run` over every stage of the DGR chain on the wiki-vital fixture, with a tiny student:
//! two workers compute the shard stages and two ranks train. Killed (SIGKILL) in the middle of
//! stage 2 and run again, it ends where an uninterrupted run ends and leaves no process behind;
//! a changed setting reruns exactly the stages that depend on it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{root, tiny_student};

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dgr"));
    command.args(["--config", "job.toml"]).args(args).current_dir(dir).env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out: Output = command(dir, args).envs(env.iter().copied()).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "dgr {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_job(dir: &Path, tiny: &Path) {
    let minilm = root().join("assets/minilm");
    let config = format!(
        "[job]\ndir = \"job\"\n\
         [prepare]\ninput = {input:?}\nsplit = {{ train = 60, dev = 40, test = 0 }}\n\
         [eval]\nsplits = [\"dev\"]\n\
         [index]\ntokenizer = {tokenizer:?}\nsample_rate = 4\n\
         [train_gen]\ninit = {tiny:?}\ntokenizer = {tokenizer:?}\nlabel_smoothing = 0.0\n\
         engine = {{ steps = 40, batch_size = 8, learning_rate = 3e-3, warmup_steps = 5, checkpoint_every = 0 }}\n\
         [retrieve]\nshard_queries = 5\nbatch_queries = 4\nsearch = {{ beam = 5, hits = 40, body_tokens = 4, title_tokens = 12 }}\n\
         [teacher]\nmodel = {minilm:?}\ndepth = 40\nshard_queries = 5\n\
         [train_distill]\nmin_negatives = 4\nnegative_pool = 6\nlambda = 1.0\n\
         engine = {{ steps = 12, batch_size = 1, learning_rate = 1e-3, warmup_steps = 2, checkpoint_every = 2, \
         eval_every = 0 }}\n\
         [coordinator]\nlease_seconds = 5.0\nheartbeat_seconds = 0.5\nlinger_seconds = 0.3\n\
         [ranks]\nworld_size = 2\nheartbeat_seconds = 0.5\nhang_seconds = 60.0\n\
         [run]\nworkers = 2\n",
        input = s(&root().join("tests/fixtures/wiki-vital/summaries_subset.json")),
        tokenizer = s(&minilm.join("tokenizer.json")),
        tiny = s(tiny),
        minilm = s(&minilm),
    );
    std::fs::write(dir.join("job.toml"), config).unwrap();
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Processes whose working directory is `dir` (this test's children and theirs).
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_ok() && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            found.push(std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default().replace('\0', " "));
        }
    }
    found
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The stages a run's log says ran, and those it found up to date.
fn stages(stderr: &str) -> (Vec<String>, Vec<String>) {
    let named = |suffix: &str| -> Vec<String> {
        stderr
            .lines()
            .filter_map(|line| line.split("stage ").nth(1)?.split_once(suffix).map(|(name, _)| name.to_string()))
            .collect()
    };
    (named(": done in"), named(": up to date"))
}

#[test]
fn run_goes_through_every_stage_resumes_after_kill_and_reruns_what_a_setting_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    tiny_student(&tmp.path().join("tiny"));
    write_job(&a, &tmp.path().join("tiny"));

    // The whole chain, uninterrupted.
    let started = Instant::now();
    let (stdout, stderr) = ok(&a, &["run"], &[]);
    eprintln!("{stdout}");
    // Workers and ranks start and end with their stage: no stage waits on a straggler.
    assert!(started.elapsed() < Duration::from_secs(240), "{stdout}");
    let (ran, _) = stages(&stderr);
    let expected = [
        "prepare",
        "bm25",
        "index",
        "train-gen",
        "retrieve-gr-dev",
        "retrieve-gr-train",
        "teacher-train",
        "train-distill",
        "retrieve-dgr-dev",
        "eval",
    ];
    assert_eq!(ran, expected, "{stderr}");
    for system in ["bm25", "gr", "dgr"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{system:<6} dev    qrels"))), "{stdout}");
    }
    let results: serde_json::Value = serde_json::from_slice(&read(a.join("job/results.json"))).unwrap();
    for plot in ["stage1-loss", "stage2-loss", "stage2-violated-pairs", "results"] {
        let png = read(a.join(format!("job/plots/{plot}.png")));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{plot}.png: {} bytes", png.len());
    }
    assert_eq!(results["rows"].as_array().unwrap().len(), 3);
    assert!(
        a.join("job/logs/train-distill-rank-1.log").is_file()
            && a.join("job/logs/teacher-train-worker-1.log").is_file()
    );
    let steps: Vec<serde_json::Value> = std::str::from_utf8(&read(a.join("job/stage2/train_log.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 12);
    let (status, _) = ok(&a, &["status"], &[]);
    assert!(
        status.lines().any(|l| l.starts_with("train-distill") && l.contains("done") && l.contains("step 12 of 12")),
        "{status}"
    );

    // The same job up to stage 2, then killed after stage 2's step-6 checkpoint and run again.
    copy_dir(&a, &b);
    for gone in ["job/stage2", "job/candidates/dgr", "job/logs"] {
        std::fs::remove_dir_all(b.join(gone)).unwrap();
    }
    for gone in ["train-distill", "retrieve-dgr-dev", "eval"] {
        std::fs::remove_file(b.join(format!("job/stages/{gone}.json"))).unwrap();
    }
    std::fs::remove_file(b.join("job/results.json")).unwrap();
    let mut run = command(&b, &["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let checkpoint = b.join("job/stage2/checkpoints/step-0000006/manifest.json");
    let started = Instant::now();
    while !checkpoint.is_file() {
        assert!(run.try_wait().unwrap().is_none(), "dgr run ended before stage 2's step-6 checkpoint");
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(!b.join("job/stage2/weights/final").exists(), "stage 2 had finished");
    let started = Instant::now();
    while !processes_in(&b).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "left running: {:?}", processes_in(&b));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (resumed, stderr) = ok(&b, &["run"], &[]);
    let (ran, up_to_date) = stages(&stderr);
    assert_eq!(ran, ["train-distill", "retrieve-dgr-dev", "eval"], "{stderr}");
    assert_eq!(up_to_date.len(), 7, "{stderr}");
    assert!(stderr.contains("stage train-distill: interrupted before: continuing it"), "{stderr}");
    assert!(std::str::from_utf8(&read(b.join("job/logs/train-distill-rank-0.log"))).unwrap().contains("resuming"));
    assert_eq!(
        read(b.join("job/stage2/weights/final/model.safetensors")),
        read(a.join("job/stage2/weights/final/model.safetensors")),
        "a resumed stage 2 ends with the weights of an uninterrupted one"
    );
    assert_eq!(read(b.join("job/results.json")), read(a.join("job/results.json")));
    assert_eq!(resumed.lines().skip(1).collect::<Vec<_>>(), stdout.lines().skip(1).collect::<Vec<_>>());

    // Another teacher depth: the teacher and every stage after it run again, nothing before.
    let (_, stderr) = ok(&a, &["run"], &[("DGR_TEACHER__DEPTH", "30")]);
    let (ran, up_to_date) = stages(&stderr);
    assert_eq!(ran, ["teacher-train", "train-distill", "retrieve-dgr-dev", "eval"], "{stderr}");
    assert_eq!(up_to_date, ["prepare", "bm25", "index", "train-gen", "retrieve-gr-dev", "retrieve-gr-train"]);
}
