//! Multi-process tests of the coordinator and its workers on loopback: a real candidate set
//! (BM25 over the wiki-vital fixture) scored by the MiniLM teacher while workers are killed
//! with SIGKILL, the coordinator killed and restarted, and bad requests thrown at it.
//!
//! `SOAK_RUNS` sets how many kill runs the first test makes (default 3;
//! `scripts/soak.sh` runs more).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Logged, root, signal};
use dgr_core::rank_lists::{MANIFEST_FILE, RankList, SET_FORMAT, SET_VERSION};
use dgr_core::shards::{ShardManifest, read_shard_set};

const TOKEN: &str = "test-token-0123456789";

fn dgr(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dgr"));
    command.current_dir(dir).env_remove("RUST_LOG").env("DGR_TOKEN", TOKEN).env("RAYON_NUM_THREADS", "1").args([
        "--config",
        "job.toml",
        "--log-format",
        "json",
    ]);
    command
}

fn ok(dir: &Path, args: &[&str]) {
    let out = dgr(dir).args(args).output().unwrap();
    assert!(out.status.success(), "dgr {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A job over the wiki-vital fixture with BM25 candidates of the train split.
fn job(dir: &Path) {
    let minilm = root().join("assets/minilm");
    assert!(minilm.is_dir(), "MiniLM missing: run scripts/fetch-assets.sh");
    let config = format!(
        "[job]\ndir = \"job\"\n[prepare]\ninput = {:?}\n[bm25]\ntop_k = 8\n\
         [teacher]\nmodel = {:?}\ncandidates = \"bm25\"\nmax_tokens = 48\ndepth = 8\nshard_queries = 2\nbatch_size = 16\n\
         [coordinator]\nbind = \"127.0.0.1:0\"\nlease_seconds = 2.0\nheartbeat_seconds = 0.4\nlinger_seconds = 1.0\n\
         max_body_bytes = 2048\n[worker]\nretry_seconds = 30.0\n",
        root().join("tests/fixtures/wiki-vital/summaries_subset.json").to_str().unwrap(),
        minilm.to_str().unwrap()
    );
    std::fs::write(dir.join("job.toml"), config).unwrap();
    ok(dir, &["prepare"]);
    ok(dir, &["bm25", "index"]);
    ok(dir, &["bm25", "search", "--split", "train"]);
}

fn rank_lists(dir: &Path) -> Vec<RankList> {
    let set = dir.join("job/rank_lists/train");
    let manifest = ShardManifest::open(&set, MANIFEST_FILE, SET_FORMAT, SET_VERSION).unwrap();
    read_shard_set(&set, &manifest).unwrap()
}

/// Same queries once each, in order, same passages, ranks and labels; scores within float noise.
fn assert_same_rank_lists(found: &[RankList], expected: &[RankList]) {
    let ids: Vec<&str> = found.iter().map(|r| r.query_id.as_str()).collect();
    let expected_ids: Vec<&str> = expected.iter().map(|r| r.query_id.as_str()).collect();
    assert_eq!(ids, expected_ids, "every query exactly once, in order");
    for (a, b) in found.iter().zip(expected) {
        assert_eq!(a.passage_ids, b.passage_ids, "{}", a.query_id);
        assert_eq!(a.labels, b.labels, "{}", a.query_id);
        assert_eq!(a.candidate_scores, b.candidate_scores, "{}", a.query_id);
        for (x, y) in a.teacher_scores.iter().zip(&b.teacher_scores) {
            assert!((x - y).abs() < 1e-6, "{}: {x} vs {y}", a.query_id);
        }
        assert_eq!(a.teacher_ranks, b.teacher_ranks, "{}", a.query_id);
    }
}

/// A running coordinator (its log collected as in [`Logged`]) and its URL.
struct Coordinator {
    process: Logged,
    url: String,
}

impl std::ops::Deref for Coordinator {
    type Target = Logged;
    fn deref(&self) -> &Logged {
        &self.process
    }
}

impl std::ops::DerefMut for Coordinator {
    fn deref_mut(&mut self) -> &mut Logged {
        &mut self.process
    }
}

impl Coordinator {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut command = dgr(dir);
        command.args(["coordinator", "--role", "teacher"]).args(extra);
        let mut process = Logged::spawn(command, "coordinator");
        let listening = process.wait_for(|l| l["fields"]["message"] == "coordinator listening", 60);
        let url = listening["fields"]["url"].as_str().unwrap().to_string();
        Coordinator { process, url }
    }

    /// Waits for the process to end (after the job), collecting the rest of its log.
    fn finish(&mut self, seconds: u64) {
        let status = self.wait_exit(seconds);
        assert!(status.success(), "coordinator failed: {:#?}", self.log);
    }

    /// Shard ids of the log's lines with `message`.
    fn shards_with(&self, message: &str) -> Vec<i64> {
        self.log
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .map(|l| l["fields"]["shard"].as_i64().unwrap())
            .collect()
    }
}

fn worker(dir: &Path, url: &str, name: &str) -> Child {
    dgr(dir)
        .args(["worker", "--role", "teacher", "--coordinator", url, "--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// xorshift: reproducible randomness without a dependency; the seed is printed on failure.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn killed_workers_leave_every_query_scored_exactly_once_as_one_process_would() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    job(dir);
    ok(dir, &["teacher", "score"]);
    let expected = rank_lists(dir);
    assert!(expected.len() > 20 && expected.iter().all(|r| !r.passage_ids.is_empty()));

    let runs: u64 = std::env::var("SOAK_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for run in 0..runs {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (run + 1);
        let mut rng = Rng(seed);
        let mut coordinator = Coordinator::start(dir, &["--overwrite"]);
        let mut workers: Vec<Child> = (0..3).map(|i| worker(dir, &coordinator.url, &format!("w{i}"))).collect();
        let (mut kills, mut pauses) = (0, 0);
        // At random moments, kill a random worker (SIGKILL; a replacement starts) or pause one
        // past its lease (SIGSTOP / SIGCONT: it wakes up to find its shard given away).
        while coordinator.child.try_wait().unwrap().is_none() && kills + pauses < 8 {
            std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
            let victim = rng.below(workers.len() as u64) as usize;
            if rng.below(3) == 0 {
                let pid = workers[victim].id();
                signal("-STOP", pid);
                std::thread::sleep(Duration::from_millis(2500)); // lease_seconds = 2
                signal("-CONT", pid);
                pauses += 1;
            } else {
                let _ = workers[victim].kill();
                let _ = workers[victim].wait();
                kills += 1;
                workers[victim] = worker(dir, &coordinator.url, &format!("w{victim}-{kills}"));
            }
        }
        coordinator.finish(240);
        for mut w in workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let found = rank_lists(dir);
        assert_same_rank_lists(&found, &expected);
        let done = coordinator.shards_with("shard done");
        let mut unique = done.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(done.len(), unique.len(), "run {run} (seed {seed:#x}): a shard was accepted twice");
        assert!(!dir.join("job/rank_lists/train/attempts").exists(), "leftover attempts");
        let count = |message: &str| coordinator.log.iter().filter(|l| l["fields"]["message"] == message).count();
        eprintln!(
            "run {run}: {kills} workers killed, {pauses} paused; {} leases for {} shards; {} duplicate completions \
             discarded; {} heartbeats of lost leases",
            count("shard leased"),
            done.len(),
            count("duplicate completion discarded"),
            count("heartbeat for a lost lease"),
        );
    }
}

#[test]
fn a_restarted_coordinator_finishes_the_job_without_redoing_done_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    job(dir);
    ok(dir, &["teacher", "score"]);
    let expected = rank_lists(dir);

    let mut first = Coordinator::start(dir, &["--overwrite"]);
    let port = first.url.rsplit(':').next().unwrap().to_string();
    let mut w = worker(dir, &first.url, "survivor");
    for _ in 0..3 {
        first.wait_for(|l| l["fields"]["message"] == "shard done", 120);
    }
    first.child.kill().unwrap(); // SIGKILL, mid-job
    first.child.wait().unwrap();
    first.collect_log();
    let done_before = first.shards_with("shard done");
    assert!(done_before.len() >= 3);

    // Same port, so the waiting worker finds it again.
    let mut second = Coordinator::start(dir, &["--bind", &format!("127.0.0.1:{port}")]);
    second.finish(240);
    assert!(w.wait().unwrap().success(), "the worker outlives the coordinator's restart");
    let leased_after = second.shards_with("shard leased");
    for shard in &done_before {
        assert!(!leased_after.contains(shard), "shard {shard} was done before the restart and leased again");
    }
    assert_same_rank_lists(&rank_lists(dir), &expected);
}

/// Sends one raw HTTP/1.1 request; returns the status code and body.
fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn bad_requests_are_rejected_with_a_reason_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    job(dir);
    let mut coordinator = Coordinator::start(dir, &["--overwrite"]);
    let url = coordinator.url.clone();
    let register = r#"{"name": "probe", "role": "teacher"}"#;

    assert_eq!(http(&url, "GET", "/v1/status", None, "").0, 401);
    assert_eq!(http(&url, "GET", "/v1/status", Some("wrong-token"), "").0, 401);
    assert_eq!(http(&url, "POST", "/v1/register", Some(&TOKEN[..TOKEN.len() - 1]), register).0, 401);
    let big = format!(r#"{{"name": "{}", "role": "teacher"}}"#, "x".repeat(4096));
    assert_eq!(http(&url, "POST", "/v1/register", Some(TOKEN), &big).0, 413);
    let (status, body) = http(&url, "POST", "/v1/register", Some(TOKEN), "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(&url, "POST", "/v1/register", Some(TOKEN), r#"{"name": 5}"#);
    assert_eq!(status, 422, "{body}");
    let (status, body) = http(&url, "POST", "/v1/register", Some(TOKEN), r#"{"name": "w", "role": "retrieve"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not `retrieve`"), "{body}");
    assert_eq!(http(&url, "GET", "/v1/nothing-here", Some(TOKEN), "").0, 404);

    let (status, body) = http(&url, "POST", "/v1/register", Some(TOKEN), register);
    assert_eq!(status, 200, "{body}");
    let worker_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["worker_id"].as_i64().unwrap();
    let (status, body) = http(&url, "POST", "/v1/lease", Some(TOKEN), &format!(r#"{{"worker_id": {worker_id}}}"#));
    assert_eq!(status, 200, "{body}");
    let lease: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lease_id = lease["lease_id"].as_i64().unwrap();
    assert_eq!(http(&url, "POST", "/v1/lease", Some(TOKEN), r#"{"worker_id": 999}"#).0, 404);
    assert_eq!(http(&url, "POST", "/v1/heartbeat", Some(TOKEN), r#"{"lease_id": 999}"#).0, 404);
    let complete = |shard: i64, file: &str| {
        format!(r#"{{"lease_id": {lease_id}, "shard": {shard}, "file": "{file}", "sha256": "00", "rows": 1}}"#)
    };
    let (status, body) = http(&url, "POST", "/v1/complete", Some(TOKEN), &complete(999, "x.arrow"));
    assert_eq!(status, 422, "a missing output is refused before the shard is looked at: {body}");
    let attempts = dir.join("job/rank_lists/train/attempts");
    std::fs::write(attempts.join("probe.arrow"), "not the claimed contents").unwrap();
    let (status, body) = http(&url, "POST", "/v1/complete", Some(TOKEN), &complete(0, "probe.arrow"));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("checksum"), "{body}");
    let (status, body) = http(&url, "POST", "/v1/complete", Some(TOKEN), &complete(0, "../../../etc/passwd"));
    assert_eq!(status, 422, "{body}");
    let sha = dgr_core::import::sha256_file(&attempts.join("probe.arrow")).unwrap().1;
    let honest = |shard: i64| {
        format!(r#"{{"lease_id": {lease_id}, "shard": {shard}, "file": "probe.arrow", "sha256": "{sha}", "rows": 1}}"#)
    };
    let (status, body) = http(&url, "POST", "/v1/complete", Some(TOKEN), &honest(999));
    assert_eq!(status, 404, "unknown shard: {body}");
    let (status, body) = http(&url, "POST", "/v1/complete", Some(TOKEN), &honest(1));
    assert_eq!(status, 409, "a lease for another shard: {body}");

    // Still serving, nothing counted as done.
    let (status, body) = http(&url, "GET", "/v1/status", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["done"], 0);
    assert_eq!(status["leased"], 1);
    // The same state for Prometheus, behind the same token.
    assert_eq!(http(&url, "GET", "/metrics", None, "").0, 401);
    let (status, metrics) = http(&url, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200, "{metrics}");
    for line in [
        r#"dgr_shards{stage="teacher",split="train",state="done"} 0.0"#,
        r#"dgr_shards{stage="teacher",split="train",state="leased"} 1.0"#,
        r#"dgr_worker_shards_done{stage="teacher",split="train",worker="probe"} 0.0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    coordinator.collect_log();
    std::thread::sleep(Duration::from_millis(200));
    coordinator.collect_log();
    let rejected = coordinator.log.iter().filter(|l| l["fields"]["message"] == "request rejected").count();
    let unauthorised =
        coordinator.log.iter().filter(|l| l["fields"]["message"] == "request without the job's token").count();
    assert!(rejected >= 11 && unauthorised == 4, "rejections are logged: {rejected} + {unauthorised}");
    coordinator.child.kill().unwrap();
    coordinator.child.wait().unwrap();
}
