//! The ledger's rules on a controlled clock: leases in shard order, expiry and reassignment,
//! heartbeats, exactly-once completion, and state kept across reopening.

use std::path::Path;

use dgr_coordinator::CoordinatorError;
use dgr_coordinator::ledger::{Completion, Heartbeat, JobSpec, LeaseOutcome, Ledger};

const TTL: f64 = 10.0;

fn job(dir: &Path, fingerprint: &str) -> JobSpec {
    JobSpec {
        stage: "teacher".into(),
        split: "train".into(),
        shards: vec![(0, 4), (4, 4), (8, 2)],
        output_dir: dir.join("out"),
        fingerprint: fingerprint.into(),
    }
}

fn leased(outcome: LeaseOutcome) -> (i64, i64) {
    match outcome {
        LeaseOutcome::Leased { lease_id, shard } => (lease_id, shard.id),
        other => panic!("expected a lease, got {other:?}"),
    }
}

#[test]
fn leases_expire_to_other_workers_and_each_shard_is_done_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path, job(tmp.path(), "inputs v1"), 100.0).unwrap();
    let a = ledger.register("a", "teacher", 100.0).unwrap();
    let b = ledger.register("b", "teacher", 100.0).unwrap();

    let (la0, s0) = leased(ledger.lease(a, 100.0, TTL).unwrap());
    let (lb1, s1) = leased(ledger.lease(b, 100.0, TTL).unwrap());
    let (la2, s2) = leased(ledger.lease(a, 101.0, TTL).unwrap());
    assert_eq!((s0, s1, s2), (0, 1, 2), "shards go out in order");
    assert_eq!(ledger.lease(b, 102.0, TTL).unwrap(), LeaseOutcome::Wait, "all leased, none expired");

    // a renews shard 0; b's lease on shard 1 runs out and shard 1 goes to a.
    assert_eq!(ledger.heartbeat(la0, 108.0, TTL).unwrap(), Heartbeat::Renewed);
    let (la1, s) = leased(ledger.lease(a, 111.0, TTL).unwrap());
    assert_eq!(s, 1);
    assert_eq!(ledger.heartbeat(lb1, 111.5, TTL).unwrap(), Heartbeat::Lost, "b learns its shard went elsewhere");
    // An expired lease nobody took over is still renewed (shard 2, unclaimed since 111).
    assert_eq!(ledger.heartbeat(la2, 115.0, TTL).unwrap(), Heartbeat::Renewed);

    // The first completion counts; a late one from the old lease is a duplicate; the same one
    // again (its answer lost) is accepted again.
    assert_eq!(ledger.complete(la1, 1, "f-a", "sha-a", 4, 112.0).unwrap(), Completion::Accepted);
    assert_eq!(ledger.complete(lb1, 1, "f-b", "sha-b", 4, 113.0).unwrap(), Completion::Duplicate);
    assert_eq!(ledger.complete(la1, 1, "f-a", "sha-a", 4, 114.0).unwrap(), Completion::Accepted);
    assert_eq!(ledger.heartbeat(la1, 114.5, TTL).unwrap(), Heartbeat::Lost, "a done shard holds no lease");

    // Wrong claims are errors that name what is wrong.
    assert!(matches!(ledger.complete(la0, 2, "f", "s", 1, 115.0), Err(CoordinatorError::LeaseMismatch { .. })));
    assert!(matches!(ledger.complete(la0, 7, "f", "s", 1, 115.0), Err(CoordinatorError::UnknownShard(7))));
    assert!(matches!(ledger.complete(999, 0, "f", "s", 1, 115.0), Err(CoordinatorError::UnknownLease(999))));
    assert!(matches!(ledger.lease(42, 115.0, TTL), Err(CoordinatorError::UnknownWorker(42))));

    let status = ledger.status(116.0).unwrap();
    assert_eq!((status.shards, status.done, status.leased, status.pending), (3, 1, 2, 0));
    assert_eq!(status.leases_granted, 4);
    assert_eq!(status.workers.iter().map(|w| w.shards_done).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(status.workers[0].shard, Some(0), "a holds shard 0 (its lease on 2 comes later in order)");

    assert_eq!(ledger.complete(la0, 0, "f0", "sha0", 4, 117.0).unwrap(), Completion::Accepted);
    assert_eq!(ledger.complete(la2, 2, "f2", "sha2", 2, 118.0).unwrap(), Completion::Accepted);
    assert!(ledger.is_complete().unwrap());
    assert_eq!(ledger.lease(b, 119.0, TTL).unwrap(), LeaseOutcome::Done);
    let done = ledger.done_shards().unwrap();
    assert_eq!(
        done.iter().map(|d| (d.shard.id, d.file.as_str(), d.rows)).collect::<Vec<_>>(),
        vec![(0, "f0", 4), (1, "f-a", 4), (2, "f2", 2)]
    );
    assert_eq!(ledger.leases_per_shard().unwrap(), vec![1, 2, 1]);
}

#[test]
fn a_reopened_ledger_keeps_its_state_and_refuses_another_job() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    {
        let mut ledger = Ledger::open(&path, job(tmp.path(), "inputs v1"), 100.0).unwrap();
        let a = ledger.register("a", "teacher", 100.0).unwrap();
        let (lease, shard) = leased(ledger.lease(a, 100.0, TTL).unwrap());
        ledger.complete(lease, shard, "f0", "sha0", 4, 101.0).unwrap();
        leased(ledger.lease(a, 102.0, TTL).unwrap()); // shard 1 leased when the process dies
    }
    let mut ledger = Ledger::open(&path, job(tmp.path(), "inputs v1"), 200.0).unwrap();
    assert_eq!(ledger.done_shards().unwrap().len(), 1);
    let status = ledger.status(103.0).unwrap();
    assert_eq!((status.done, status.leased, status.pending), (1, 1, 1));
    assert!((status.elapsed_seconds - 3.0).abs() < 1e-9, "the job's start survives the restart");
    // The old worker id is still known; the dead lease on shard 1 runs out and is re-leased.
    let (_, shard) = leased(ledger.lease(1, 103.0, TTL).unwrap());
    assert_eq!(shard, 2);
    let (_, shard) = leased(ledger.lease(1, 113.0, TTL).unwrap());
    assert_eq!(shard, 1);
    drop(ledger);

    let err = Ledger::open(&path, job(tmp.path(), "inputs v2"), 300.0).err().unwrap().to_string();
    assert!(err.contains("another job") && err.contains("fingerprint") && err.contains("--overwrite"), "{err}");
}
