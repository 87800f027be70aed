//! The training rendezvous as state: worlds form in (node, local rank) order, bad joins are
//! refused with their reason while the job goes on, dead, stopped and lagging ranks are named
//! and the others told to abort, and a stop request reaches every rank.

use dgr_coordinator::api::{JoinRequest, Outcome, Phase, RankHeartbeat, RankInstruction, WorldResponse};
use dgr_coordinator::rendezvous::{JobEnd, JobState, RanksConfig, Rendezvous};

fn config(world_size: usize) -> RanksConfig {
    RanksConfig { world_size, heartbeat_seconds: 1.0, hang_seconds: 30.0, join_timeout_seconds: 100.0 }
}

fn request(node: u32, local_rank: u32) -> JoinRequest {
    JoinRequest {
        name: format!("n{node}l{local_rank}"),
        node,
        local_rank,
        ring_address: format!("10.0.0.{node}:{}", 9000 + local_rank),
        world_size: 3,
        fingerprint: "abcdef0123456789".into(),
    }
}

fn beat(member_id: u64, step: u64, phase: Phase) -> RankHeartbeat {
    RankHeartbeat {
        loss: None,
        member_id,
        step,
        phase,
        step_seconds: None,
        all_reduce_seconds: None,
        all_reduce_bytes_per_second: None,
    }
}

/// A running world of 3: members 0, 1, 2 joined as (1,0), (0,1), (0,0).
fn running() -> Rendezvous {
    let mut r = Rendezvous::new("train-gen", "abcdef0123456789", config(3), 77, 0.0);
    for (node, local) in [(1, 0), (0, 1), (0, 0)] {
        r.join(request(node, local), 1.0).unwrap();
    }
    r
}

#[test]
fn ranks_are_numbered_by_node_then_local_rank_once_all_have_joined() {
    let mut r = Rendezvous::new("train-gen", "abcdef0123456789", config(3), 77, 0.0);
    let first = r.join(request(1, 0), 1.0).unwrap();
    assert_eq!(r.world(first, 1.0).unwrap(), WorldResponse::Wait { joined: 1, world_size: 3 });
    r.join(request(0, 1), 1.0).unwrap();
    let last = r.join(request(0, 0), 1.0).unwrap();
    assert_eq!(*r.state(), JobState::Running);
    let peers: Vec<String> = ["10.0.0.0:9000", "10.0.0.0:9001", "10.0.0.1:9000"].map(String::from).to_vec();
    let ready = |rank| WorldResponse::Ready { rank, world_size: 3, peers: peers.clone(), key: 77 };
    assert_eq!(r.world(first, 2.0).unwrap(), ready(2));
    assert_eq!(r.world(last, 2.0).unwrap(), ready(0));
}

#[test]
fn bad_joins_are_refused_with_their_reason_and_the_job_goes_on() {
    let mut r = Rendezvous::new("train-gen", "abcdef0123456789", config(3), 77, 0.0);
    r.join(request(0, 0), 1.0).unwrap();
    let refusal = |r: &mut Rendezvous, request: JoinRequest| r.join(request, 2.0).unwrap_err().to_string();
    let second_rank_zero = refusal(&mut r, request(0, 0));
    assert!(second_rank_zero.contains("node 0 local rank 0 has joined already (as n0l0)"), "{second_rank_zero}");
    let wrong_world = refusal(&mut r, JoinRequest { world_size: 4, ..request(0, 1) });
    assert!(wrong_world.contains("launched for a world of 4 ranks, the job has 3"), "{wrong_world}");
    let other = refusal(&mut r, JoinRequest { fingerprint: "0123456789abcdef".into(), ..request(0, 1) });
    assert!(other.contains("another program or other settings (fingerprint 0123456789ab, the job's abcdef012345)"));
    assert_eq!(*r.state(), JobState::Forming);
    r.join(request(0, 1), 3.0).unwrap();
    r.join(request(0, 2), 3.0).unwrap();
    assert_eq!(*r.state(), JobState::Running);
    let late = refusal(&mut r, request(1, 0));
    assert!(late.contains("the world of 3 ranks is complete"), "{late}");
    assert!(r.world(99, 3.0).is_err(), "an unknown member");
}

#[test]
fn a_silent_rank_is_named_and_the_others_abort() {
    let mut r = running();
    for t in [2.0, 10.0, 20.0, 30.0] {
        for member in [0, 1] {
            assert_eq!(r.heartbeat(beat(member, t as u64, Phase::Compute), t).unwrap(), RankInstruction::Continue);
        }
    }
    // Member 2 (rank 0) last reported at 1.0.
    assert_eq!(r.check(31.5).as_deref(), Some("rank 0 (n0l0) has not reported for 30 s: it died, hangs or is stopped"));
    let RankInstruction::Abort { reason } = r.heartbeat(beat(0, 30, Phase::Collective), 32.0).unwrap() else {
        panic!("not told to abort")
    };
    assert!(reason.contains("rank 0 (n0l0)"));
    assert_eq!(r.end(32.0), None, "ranks 1 and 2 have not left yet");
    r.leave(0, Outcome::Failed, "rank 0 closed its connection".into(), 33.0).unwrap();
    r.leave(1, Outcome::Failed, "aborted".into(), 33.0).unwrap();
    assert!(matches!(r.end(33.0), Some(JobEnd::Failed(reason)) if reason.contains("has not reported")));
    assert!(r.join(request(2, 0), 34.0).unwrap_err().to_string().contains("the job has failed"));
}

#[test]
fn a_rank_that_computes_while_the_others_wait_in_its_all_reduce_is_named() {
    let mut r = running();
    r.heartbeat(beat(0, 4, Phase::Collective), 10.0).unwrap();
    r.heartbeat(beat(1, 4, Phase::Collective), 10.0).unwrap();
    r.heartbeat(beat(2, 4, Phase::Compute), 10.0).unwrap();
    // Everyone keeps reporting, so nobody is silent; the steps do not move.
    for t in [20.0, 30.0] {
        for (member, phase) in [(0, Phase::Collective), (1, Phase::Collective), (2, Phase::Compute)] {
            assert_eq!(r.heartbeat(beat(member, 4, phase), t).unwrap(), RankInstruction::Continue);
        }
    }
    let found = r.check(40.5).unwrap();
    assert!(
        found.contains("rank 0 (n0l0) is still computing step 5 while the other ranks have waited 30 s"),
        "{found}"
    );
    // A rank that moves on is not waiting: steps that advance never look like a hang.
    let mut r = running();
    for step in 0..100 {
        let t = 2.0 + step as f64;
        r.heartbeat(beat(0, step, Phase::Collective), t).unwrap();
        r.heartbeat(beat(1, step, Phase::Collective), t).unwrap();
        r.heartbeat(beat(2, step, Phase::Compute), t).unwrap();
        assert_eq!(r.check(t), None);
    }
}

#[test]
fn a_dev_evaluation_longer_than_the_hang_limit_is_not_a_hang() {
    let mut r = running();
    // Member 2 (rank 0) evaluates on dev after step 10 for 45 s while the others already wait
    // in step 11's all-reduce; then it computes step 11.
    for t in (0..=45).step_by(5).map(|t| 10.0 + t as f64) {
        r.heartbeat(beat(0, 10, Phase::Collective), t).unwrap();
        r.heartbeat(beat(1, 10, Phase::Collective), t).unwrap();
        assert_eq!(r.heartbeat(beat(2, 10, Phase::Other), t).unwrap(), RankInstruction::Continue);
    }
    assert_eq!(r.heartbeat(beat(2, 10, Phase::Compute), 56.0).unwrap(), RankInstruction::Continue);
    assert_eq!(r.check(60.0), None, "the evaluation is not counted as computing");
    // Computing past the limit after it is still a hang, counted from its return to the step.
    for t in [70.0, 80.0] {
        r.heartbeat(beat(0, 10, Phase::Collective), t).unwrap();
        r.heartbeat(beat(1, 10, Phase::Collective), t).unwrap();
        r.heartbeat(beat(2, 10, Phase::Compute), t).unwrap();
    }
    assert_eq!(r.check(85.0), None);
    let found = r.check(86.5).unwrap();
    assert!(
        found.contains("rank 0 (n0l0) is still computing step 11 while the other ranks have waited 30 s"),
        "{found}"
    );
}

#[test]
fn a_stop_reaches_every_rank_and_the_job_ends_stopped() {
    let mut r = running();
    r.request_stop("SIGTERM to the coordinator");
    for member in 0..3 {
        let instruction = r.heartbeat(beat(member, 7, Phase::Compute), 5.0).unwrap();
        assert_eq!(instruction, RankInstruction::Stop { reason: "SIGTERM to the coordinator".into() });
    }
    for member in 0..3 {
        assert_eq!(r.end(6.0), None);
        r.leave(member, Outcome::Stopped, "checkpoint of step 8".into(), 6.0).unwrap();
    }
    assert_eq!(r.end(6.0), Some(JobEnd::Stopped));
    assert_eq!(r.status(6.0).state, "stopped");

    let mut r = running();
    for member in 0..3 {
        r.leave(member, Outcome::Finished, "done".into(), 6.0).unwrap();
    }
    assert_eq!(r.end(6.0), Some(JobEnd::Finished));
}

#[test]
fn a_world_that_never_completes_fails_after_the_join_timeout() {
    let mut r = Rendezvous::new("train-gen", "abcdef0123456789", config(3), 77, 0.0);
    r.join(request(0, 0), 1.0).unwrap();
    assert_eq!(r.check(99.0), None);
    assert_eq!(r.check(101.0).as_deref(), Some("only 1 of 3 ranks joined within 100 s"));
}
