//! `GET /metrics`: the coordinator's state in the OpenMetrics text format that Prometheus
//! scrapes (behind the same token as every route: a scrape configuration passes it as a bearer
//! token). Each scrape encodes a fresh registry from the current status, so the numbers are
//! the ledger's and the rendezvous's own, never a second count kept beside them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{StatusResponse, TrainStatus};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type Values = Family<Labels, Gauge<f64, AtomicU64>>;

/// Gauges by name, registered as they are first set.
struct Gauges {
    registry: Registry,
    families: Vec<(&'static str, Values)>,
}

impl Gauges {
    fn new() -> Self {
        Gauges { registry: Registry::with_prefix("dgr"), families: Vec::new() }
    }

    fn set(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        let family = match self.families.iter().find(|(n, _)| *n == name) {
            Some((_, family)) => family.clone(),
            None => {
                let family = Values::default();
                self.registry.register(name, help, family.clone());
                self.families.push((name, family.clone()));
                family
            }
        };
        let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        family.get_or_create(&labels).set(value);
    }

    fn encode(self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// A shard stage's job: shards by state, leases, ETA, and each worker's progress.
pub fn shard_metrics(status: &StatusResponse) -> String {
    let mut g = Gauges::new();
    let job = [("stage", status.stage.as_str()), ("split", status.split.as_str())];
    for (state, count) in [("done", status.done), ("leased", status.leased), ("pending", status.pending)] {
        let labels = [job[0], job[1], ("state", state)];
        g.set("shards", "Shards of the job by state", &labels, count as f64);
    }
    g.set("leases_granted", "Leases granted since the job began", &job, status.leases_granted as f64);
    g.set("elapsed_seconds", "Seconds since the job began", &job, status.elapsed_seconds);
    if let Some(eta) = status.eta_seconds {
        g.set("eta_seconds", "Seconds until every shard is done, at the recent rate", &job, eta);
    }
    for worker in &status.workers {
        let labels = [job[0], job[1], ("worker", worker.name.as_str())];
        g.set("worker_shards_done", "Shards a worker completed", &labels, worker.shards_done as f64);
        g.set("worker_shards_per_minute", "A worker's recent rate", &labels, worker.shards_per_minute);
        g.set(
            "worker_seconds_since_seen",
            "Seconds since a worker was last heard from",
            &labels,
            worker.seconds_since_seen,
        );
    }
    g.encode()
}

/// A training job: its state and world, and per rank the step, step and all-reduce time,
/// the loss and how long since it reported.
pub fn train_metrics(status: &TrainStatus) -> String {
    let mut g = Gauges::new();
    let stage = ("stage", status.stage.as_str());
    g.set("train_world_size", "Ranks the training job needs", &[stage], status.world_size as f64);
    g.set("train_ranks_joined", "Ranks that joined", &[stage], status.ranks.len() as f64);
    g.set(
        "train_state",
        "The training job's state (1 for the current one)",
        &[stage, ("state", status.state.as_str())],
        1.0,
    );
    g.set("train_elapsed_seconds", "Seconds since the training coordinator started", &[stage], status.elapsed_seconds);
    for rank in &status.ranks {
        let number = rank.rank.map_or("-".to_string(), |r| r.to_string());
        let labels = [stage, ("rank", number.as_str()), ("name", rank.name.as_str())];
        g.set("rank_step", "Steps a rank has done", &labels, rank.step as f64);
        g.set("rank_seconds_since_seen", "Seconds since a rank's last heartbeat", &labels, rank.seconds_since_seen);
        if let Some(seconds) = rank.step_seconds {
            g.set("rank_step_seconds", "Seconds of a rank's last step", &labels, seconds);
        }
        if let Some(seconds) = rank.all_reduce_seconds {
            g.set("rank_all_reduce_seconds", "Seconds of a rank's last all-reduce", &labels, seconds);
        }
        if let Some(loss) = rank.loss {
            g.set("rank_loss", "Training loss of a rank's last step", &labels, loss);
        }
    }
    g.encode()
}

#[cfg(test)]
mod tests {
    use super::train_metrics;
    use crate::api::{Phase, RankStatus, TrainStatus};

    #[test]
    fn a_training_job_shows_each_ranks_step_time_and_loss() {
        let rank = |rank: usize, loss: Option<f64>| RankStatus {
            rank: Some(rank),
            name: format!("node:{rank}"),
            node: 0,
            local_rank: rank as u32,
            step: 7,
            phase: Phase::Compute,
            seconds_in_phase: 0.1,
            seconds_since_seen: 0.5,
            step_seconds: Some(1.5),
            all_reduce_seconds: Some(0.25),
            all_reduce_bytes_per_second: None,
            loss,
            outcome: None,
        };
        let status = TrainStatus {
            stage: "train-gen".into(),
            world_size: 2,
            state: "running".into(),
            reason: None,
            elapsed_seconds: 12.0,
            ranks: vec![rank(0, Some(2.75)), rank(1, None)],
        };
        let text = train_metrics(&status);
        for line in [
            r#"dgr_train_world_size{stage="train-gen"} 2.0"#,
            r#"dgr_train_state{stage="train-gen",state="running"} 1.0"#,
            r#"dgr_rank_step{stage="train-gen",rank="1",name="node:1"} 7.0"#,
            r#"dgr_rank_all_reduce_seconds{stage="train-gen",rank="0",name="node:0"} 0.25"#,
            r#"dgr_rank_loss{stage="train-gen",rank="0",name="node:0"} 2.75"#,
            "# TYPE dgr_rank_loss gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains(r#"dgr_rank_loss{stage="train-gen",rank="1""#), "no loss before a step:\n{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
