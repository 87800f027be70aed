//! The rendezvous of data-parallel training ranks and the watch over them, as state that the
//! service changes on each request and on a clock tick (times are passed in, so it is tested
//! without waiting).
//!
//! Ranks join with their place (node, local rank), their ring address and the job's
//! fingerprint; once `world_size` have joined, ranks are numbered in (node, local rank) order
//! and every rank learns the world. While training, each rank's heartbeat carries its step and
//! phase. A rank that stops reporting, or that still computes a step while the others have
//! waited `hang_seconds` for its all-reduce, is named and the job fails: the other ranks are
//! told to abort instead of waiting for a collective that cannot end. A stop request
//! (preemption) is passed on to every rank, which finish the step, checkpoint it and leave.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::api::{JoinRequest, Outcome, Phase, RankHeartbeat, RankInstruction, RankStatus, TrainStatus, WorldResponse};
use crate::error::{CoordinatorError, Result};

/// `[ranks]`: the ranks of data-parallel training and how they are watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RanksConfig {
    /// Ranks of the job (nodes × ranks per node); each rank states the world it was launched
    /// for, and the coordinator refuses one that disagrees.
    pub world_size: usize,
    /// How often ranks report their step.
    pub heartbeat_seconds: f64,
    /// A rank silent this long, or computing while the others have waited this long in its
    /// all-reduce, is named and the job stopped.
    pub hang_seconds: f64,
    /// Every rank must have joined within this long of the coordinator's start.
    pub join_timeout_seconds: f64,
}

impl Default for RanksConfig {
    fn default() -> Self {
        RanksConfig { world_size: 1, heartbeat_seconds: 2.0, hang_seconds: 30.0, join_timeout_seconds: 600.0 }
    }
}

/// Where the job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Ranks are joining.
    Forming,
    Running,
    /// Asked to stop: ranks finish their step, checkpoint it and leave.
    Stopping(String),
    /// A rank failed, died or hangs; the others are told to abort.
    Failed(String),
}

/// How the job ended, once every rank has left (or, after a failure, left or gone silent).
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    Finished,
    Stopped,
    Failed(String),
}

struct Member {
    request: JoinRequest,
    rank: Option<usize>,
    last_seen: f64,
    step: u64,
    phase: Phase,
    phase_since: f64,
    heartbeat: Option<RankHeartbeat>,
    outcome: Option<(Outcome, String)>,
}

impl Member {
    fn label(&self) -> String {
        match self.rank {
            Some(rank) => format!("rank {rank} ({})", self.request.name),
            None => {
                format!("node {} local rank {} ({})", self.request.node, self.request.local_rank, self.request.name)
            }
        }
    }
}

pub struct Rendezvous {
    stage: String,
    fingerprint: String,
    config: RanksConfig,
    key: u64,
    started: f64,
    /// Indexed by member id.
    members: Vec<Member>,
    state: JobState,
}

impl Rendezvous {
    /// A job of `stage` whose ranks must present `fingerprint`; `key` secures the ring
    /// handshake of this job's world (a new one per coordinator start).
    pub fn new(stage: &str, fingerprint: &str, config: RanksConfig, key: u64, now: f64) -> Self {
        Rendezvous {
            stage: stage.to_string(),
            fingerprint: fingerprint.to_string(),
            config,
            key,
            started: now,
            members: Vec::new(),
            state: JobState::Forming,
        }
    }

    pub fn state(&self) -> &JobState {
        &self.state
    }

    pub fn config(&self) -> &RanksConfig {
        &self.config
    }

    /// Admits a rank, or says why not.
    pub fn join(&mut self, request: JoinRequest, now: f64) -> Result<u64> {
        let world = self.config.world_size;
        match &self.state {
            JobState::Forming => {}
            JobState::Failed(reason) => return Err(refused(format!("the job has failed: {reason}"))),
            JobState::Stopping(reason) => return Err(refused(format!("the job is stopping: {reason}"))),
            JobState::Running => {
                return Err(refused(format!(
                    "the world of {world} ranks is complete; this job takes no more ranks (restart the whole job to change its size)"
                )));
            }
        }
        if request.world_size != world {
            return Err(refused(format!(
                "this rank was launched for a world of {} ranks, the job has {world}",
                request.world_size
            )));
        }
        if request.fingerprint != self.fingerprint {
            return Err(refused(format!(
                "this rank runs another program or other settings (fingerprint {}, the job's {}): every node needs the same dgr binary and configuration",
                short(&request.fingerprint),
                short(&self.fingerprint)
            )));
        }
        if let Some(taken) =
            self.members.iter().find(|m| m.request.node == request.node && m.request.local_rank == request.local_rank)
        {
            return Err(refused(format!(
                "node {} local rank {} has joined already (as {}): two ranks cannot take one place",
                request.node, request.local_rank, taken.request.name
            )));
        }
        let id = self.members.len() as u64;
        info!(member = id, name = %request.name, node = request.node, local_rank = request.local_rank, "rank joined");
        self.members.push(Member {
            request,
            rank: None,
            last_seen: now,
            step: 0,
            phase: Phase::Starting,
            phase_since: now,
            heartbeat: None,
            outcome: None,
        });
        if self.members.len() == world {
            let mut order: Vec<usize> = (0..world).collect();
            order.sort_by_key(|&m| (self.members[m].request.node, self.members[m].request.local_rank));
            for (rank, member) in order.into_iter().enumerate() {
                self.members[member].rank = Some(rank);
            }
            self.state = JobState::Running;
            info!(world_size = world, "every rank has joined: training starts");
        }
        Ok(id)
    }

    /// The world, once complete.
    pub fn world(&mut self, member_id: u64, now: f64) -> Result<WorldResponse> {
        let member = self.member(member_id)?;
        let rank = member.rank;
        self.seen(member_id, now);
        if let JobState::Failed(reason) = &self.state {
            return Err(refused(format!("the job has failed: {reason}")));
        }
        let Some(rank) = rank else {
            return Ok(WorldResponse::Wait { joined: self.members.len(), world_size: self.config.world_size });
        };
        let mut peers = vec![String::new(); self.config.world_size];
        for member in &self.members {
            if let Some(r) = member.rank {
                peers[r] = member.request.ring_address.clone();
            }
        }
        Ok(WorldResponse::Ready { rank, world_size: self.config.world_size, peers, key: self.key })
    }

    /// Records a heartbeat and answers what the rank should do.
    pub fn heartbeat(&mut self, heartbeat: RankHeartbeat, now: f64) -> Result<RankInstruction> {
        let id = heartbeat.member_id;
        self.member(id)?;
        let member = &mut self.members[id as usize];
        if member.phase != heartbeat.phase || member.step != heartbeat.step {
            member.phase = heartbeat.phase;
            member.phase_since = now;
        }
        member.step = heartbeat.step;
        member.last_seen = now;
        member.heartbeat = Some(heartbeat);
        self.check(now);
        Ok(match &self.state {
            JobState::Forming | JobState::Running => RankInstruction::Continue,
            JobState::Stopping(reason) => RankInstruction::Stop { reason: reason.clone() },
            JobState::Failed(reason) => RankInstruction::Abort { reason: reason.clone() },
        })
    }

    /// A rank leaves with its outcome; a failure fails the job.
    pub fn leave(&mut self, member_id: u64, outcome: Outcome, message: String, now: f64) -> Result<()> {
        self.member(member_id)?;
        self.seen(member_id, now);
        let member = &mut self.members[member_id as usize];
        let label = member.label();
        info!(rank = %label, ?outcome, %message, "rank left");
        member.outcome = Some((outcome, message.clone()));
        if outcome == Outcome::Failed && !matches!(self.state, JobState::Failed(_)) {
            self.fail(format!("{label} failed: {message}"));
        }
        Ok(())
    }

    /// Passes a stop request (preemption) on to every rank.
    pub fn request_stop(&mut self, reason: &str) {
        if matches!(self.state, JobState::Forming | JobState::Running) {
            warn!(%reason, "stopping the job: every rank checkpoints its current step and exits");
            self.state = JobState::Stopping(reason.to_string());
        }
    }

    /// Looks for ranks that died, hang or never joined; returns the failure it found.
    pub fn check(&mut self, now: f64) -> Option<String> {
        if matches!(self.state, JobState::Failed(_)) {
            return None;
        }
        let hang = self.config.hang_seconds;
        let problem = if self.state == JobState::Forming {
            (now - self.started > self.config.join_timeout_seconds).then(|| {
                format!(
                    "only {} of {} ranks joined within {:.0} s",
                    self.members.len(),
                    self.config.world_size,
                    self.config.join_timeout_seconds
                )
            })
        } else {
            let live: Vec<&Member> = self.members.iter().filter(|m| m.outcome.is_none()).collect();
            let silent = live.iter().find(|m| now - m.last_seen > hang).map(|m| {
                format!("{} has not reported for {:.0} s: it died, hangs or is stopped", m.label(), now - m.last_seen)
            });
            // A hang is computing while others wait: time spent outside the step (a dev
            // evaluation, a checkpoint) before the rank went back to computing does not count.
            let lagging = || {
                live.iter().filter(|m| m.phase == Phase::Compute).find_map(|computing| {
                    let waiting_since = live
                        .iter()
                        .filter(|m| m.phase == Phase::Collective && m.step == computing.step)
                        .map(|m| m.phase_since)
                        .reduce(f64::max)?;
                    let waited = now - waiting_since.max(computing.phase_since);
                    (waited > hang).then(|| {
                        format!(
                            "{} is still computing step {} while the other ranks have waited {waited:.0} s for its all-reduce",
                            computing.label(),
                            computing.step + 1
                        )
                    })
                })
            };
            silent.or_else(lagging)
        };
        if let Some(reason) = &problem {
            self.fail(reason.clone());
        }
        problem
    }

    /// How the job ended, if it has: every rank left, or after a failure every rank left or
    /// went silent.
    pub fn end(&self, now: f64) -> Option<JobEnd> {
        let hang = self.config.hang_seconds;
        match &self.state {
            JobState::Failed(reason) => self
                .members
                .iter()
                .all(|m| m.outcome.is_some() || now - m.last_seen > hang)
                .then(|| JobEnd::Failed(reason.clone())),
            JobState::Forming => None,
            JobState::Running | JobState::Stopping(_) => {
                let outcomes: Vec<Outcome> =
                    self.members.iter().filter_map(|m| m.outcome.as_ref().map(|(o, _)| *o)).collect();
                (outcomes.len() == self.members.len()).then(|| {
                    if outcomes.iter().all(|&o| o == Outcome::Finished) { JobEnd::Finished } else { JobEnd::Stopped }
                })
            }
        }
    }

    pub fn status(&self, now: f64) -> TrainStatus {
        let (state, reason) = match (&self.state, self.end(now)) {
            (_, Some(JobEnd::Finished)) => ("finished", None),
            (JobState::Stopping(reason), Some(JobEnd::Stopped)) => ("stopped", Some(reason.clone())),
            (JobState::Forming, _) => ("forming", None),
            (JobState::Running, _) => ("running", None),
            (JobState::Stopping(reason), _) => ("stopping", Some(reason.clone())),
            (JobState::Failed(reason), _) => ("failed", Some(reason.clone())),
        };
        let mut ranks: Vec<RankStatus> = self
            .members
            .iter()
            .map(|m| {
                let heartbeat = m.heartbeat.as_ref();
                RankStatus {
                    rank: m.rank,
                    name: m.request.name.clone(),
                    node: m.request.node,
                    local_rank: m.request.local_rank,
                    step: m.step,
                    phase: m.phase,
                    seconds_in_phase: now - m.phase_since,
                    seconds_since_seen: now - m.last_seen,
                    step_seconds: heartbeat.and_then(|h| h.step_seconds),
                    all_reduce_seconds: heartbeat.and_then(|h| h.all_reduce_seconds),
                    all_reduce_bytes_per_second: heartbeat.and_then(|h| h.all_reduce_bytes_per_second),
                    loss: heartbeat.and_then(|h| h.loss),
                    outcome: m.outcome.as_ref().map(|(o, _)| *o),
                }
            })
            .collect();
        ranks.sort_by_key(|r| (r.rank.unwrap_or(usize::MAX), r.node, r.local_rank));
        TrainStatus {
            stage: self.stage.clone(),
            world_size: self.config.world_size,
            state: state.to_string(),
            reason,
            elapsed_seconds: now - self.started,
            ranks,
        }
    }

    fn member(&self, id: u64) -> Result<&Member> {
        self.members.get(id as usize).ok_or(CoordinatorError::UnknownWorker(id as i64))
    }

    fn seen(&mut self, id: u64, now: f64) {
        if let Some(member) = self.members.get_mut(id as usize) {
            member.last_seen = now;
        }
    }

    fn fail(&mut self, reason: String) {
        warn!(%reason, "the training job fails: the other ranks are told to abort");
        self.state = JobState::Failed(reason);
    }
}

fn refused(reason: String) -> CoordinatorError {
    CoordinatorError::Refused(reason)
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}
