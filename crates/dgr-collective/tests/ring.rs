//! The TCP ring on loopback: all-reduce gives the exact sum (integers stored as floats) for 1 to
//! 4 ranks and buffer lengths from 0 to millions, not divisible by the rank count; broadcast
//! copies the root's bytes; set-up refuses another job's key; a rank that exits or is aborted
//! makes its neighbours fail naming it instead of hanging.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use dgr_collective::{Collective, CollectiveError, RingConfig, TcpRing};

fn listeners(world: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let listeners: Vec<TcpListener> = (0..world).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addresses = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    (listeners, addresses)
}

/// Runs `body` on every rank of a ring of `world` threads, with per-rank `configs`.
fn on_ring<T: Send>(configs: Vec<RingConfig>, body: impl Fn(Result<TcpRing, CollectiveError>) -> T + Sync) -> Vec<T> {
    let (listeners, addresses) = listeners(configs.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = listeners
            .into_iter()
            .zip(configs)
            .enumerate()
            .map(|(rank, (listener, config))| {
                let (addresses, body) = (&addresses, &body);
                scope.spawn(move || body(TcpRing::connect(rank, listener, addresses, &config)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn config(segment_bytes: usize) -> RingConfig {
    RingConfig { key: 7, connect_timeout: Duration::from_secs(20), segment_bytes }
}

/// Rank `r`'s value at `i`: small integers, so every partial sum is exact in f32.
fn value(rank: usize, i: usize) -> f32 {
    ((i * 7 + rank * 13) % 1000) as f32 - 500.0
}

#[test]
fn all_reduce_is_the_exact_sum_for_every_world_and_length() {
    for world in 1..=4 {
        for &(length, segment_bytes) in &[
            (0, 64),
            (1, 64),
            (2, 64),
            (3, 8),
            (5, 4),
            (1000, 64),
            (65_537, 4096),
            (2_000_003, 1 << 20),
            (16_000_001, 1 << 20),
        ] {
            let results = on_ring(vec![config(segment_bytes); world], |ring| {
                let mut ring = ring.unwrap();
                let mut buffer: Vec<f32> = (0..length).map(|i| value(ring.rank(), i)).collect();
                ring.all_reduce_sum(&mut buffer).unwrap();
                // A second call on the same connections starts clean.
                let mut again: Vec<f32> = (0..length).map(|i| value(ring.rank(), i)).collect();
                ring.all_reduce_sum(&mut again).unwrap();
                assert_eq!(buffer, again);
                buffer
            });
            let expected: Vec<f32> = (0..length).map(|i| (0..world).map(|r| value(r, i)).sum()).collect();
            for (rank, result) in results.iter().enumerate() {
                assert!(result == &expected, "world {world}, length {length}: rank {rank} differs from the exact sum");
            }
        }
    }
}

#[test]
fn sums_of_fractions_are_the_same_bits_on_every_rank_and_every_run() {
    let run = || {
        on_ring(vec![config(256); 3], |ring| {
            let mut ring = ring.unwrap();
            let mut buffer: Vec<f32> = (0..10_001).map(|i| 1.0 / (1.0 + (i + ring.rank()) as f32)).collect();
            ring.all_reduce_mean(&mut buffer).unwrap();
            buffer.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        })
    };
    let first = run();
    assert!(first.iter().all(|bits| bits == &first[0]), "ranks disagree");
    assert_eq!(first, run(), "a rerun reduced to other bits");
}

#[test]
fn broadcast_copies_the_root_and_barrier_returns() {
    for world in 1..=4 {
        for root in 0..world {
            let results = on_ring(vec![config(64); world], |ring| {
                let mut ring = ring.unwrap();
                let mut bytes: Vec<u8> = (0..100_000).map(|i| (i * (ring.rank() + 1)) as u8).collect();
                ring.broadcast(&mut bytes, root).unwrap();
                ring.barrier().unwrap();
                bytes
            });
            let expected: Vec<u8> = (0..100_000).map(|i| (i * (root + 1)) as u8).collect();
            assert!(results.iter().all(|b| b == &expected), "world {world}, root {root}");
        }
    }
    let results =
        on_ring(vec![config(64); 2], |ring| ring.unwrap().broadcast(&mut [0u8; 4], 2).map_err(|e| e.to_string()));
    assert!(results.iter().all(|r| r.as_ref().is_err_and(|e| e.contains("rank 2 in a world of 2"))), "{results:?}");
}

#[test]
fn a_rank_with_another_key_is_refused() {
    let mut configs = vec![config(64); 3];
    configs[1].key = 8;
    configs.iter_mut().for_each(|c| c.connect_timeout = Duration::from_secs(3));
    let results = on_ring(configs, |ring| ring.err().map(|e| e.to_string()));
    // Rank 1 (key 8) refuses rank 0's greeting and is refused by rank 2, so neither accepts
    // the neighbour it waits for; rank 0 learns why.
    let refused = "rank 1 refused the connection: it belongs to another job or runs other settings";
    assert!(results[0].as_ref().is_some_and(|e| e.contains(refused)), "{results:?}");
    assert!(results[1].as_ref().is_some_and(|e| e.contains("rank 0 did not connect")), "{results:?}");
    assert!(results[2].as_ref().is_some_and(|e| e.contains("rank 1 did not connect")), "{results:?}");
}

#[test]
fn a_rank_that_exits_is_named_by_its_neighbours() {
    let started = Instant::now();
    let results = on_ring(vec![config(4096); 3], |ring| {
        let mut ring = ring.unwrap();
        if ring.rank() == 2 {
            return None; // exits: its connections close
        }
        let mut buffer = vec![1.0f32; 1_000_000];
        Some(ring.all_reduce_sum(&mut buffer).unwrap_err())
    });
    // Both neighbours fail; which rank each names depends on which of its connections breaks
    // first (rank 1 leaving in turn closes rank 0's other one), but the exit is seen.
    let named: Vec<Option<usize>> = results[..2].iter().map(|r| r.as_ref().and_then(|e| e.peer())).collect();
    assert!(named.iter().all(Option::is_some) && named.contains(&Some(2)), "{results:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn an_aborted_ring_returns_instead_of_waiting_on_a_silent_peer() {
    let results = on_ring(vec![config(4096); 2], |ring| {
        let mut ring = ring.unwrap();
        if ring.rank() == 1 {
            std::thread::sleep(Duration::from_secs(3)); // silent, as a stopped process
            return None;
        }
        let aborter = ring.aborter().unwrap();
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            aborter.abort();
        });
        let error = ring.all_reduce_sum(&mut [1.0f32; 10]).unwrap_err();
        Some((error.peer(), started.elapsed()))
    });
    let (peer, waited) = results[0].unwrap();
    assert_eq!(peer, Some(1));
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
}
