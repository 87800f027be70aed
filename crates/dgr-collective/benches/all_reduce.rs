//! The TCP ring's all-reduce between processes of this machine: the Rust half of
//! scripts/bench/all_reduce.sh (torch.distributed's gloo is the other).
//!
//! `cargo bench -p dgr-collective --bench all_reduce -- [RANKS [REPEATS]]` starts RANKS
//! processes (default 2) that join one ring on loopback, all-reduce buffers of 1 to 256 MiB
//! (`REPEATS` timed runs after one warm-up, default 5) and print, from rank 0, one JSON line per
//! size: bytes, the median seconds, and the algorithm bandwidth (bytes / seconds).
//! `ALL_REDUCE_SEGMENT_BYTES` overrides the ring's segment size.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Instant;

use dgr_collective::{Collective, RingConfig, TcpRing};

const SIZES_MIB: [usize; 5] = [1, 4, 16, 64, 256];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let ranks: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let repeats: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    match std::env::var("ALL_REDUCE_RANK") {
        Ok(rank) => rank_main(rank.parse().expect("ALL_REDUCE_RANK"), repeats),
        Err(_) => {
            // Free ports for every rank, handed to the children.
            let peers: Vec<String> = (0..ranks)
                .map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string())
                .collect();
            let children: Vec<_> = (0..ranks)
                .map(|rank| {
                    Command::new(std::env::current_exe().unwrap())
                        .args([ranks.to_string(), repeats.to_string()])
                        .env("ALL_REDUCE_RANK", rank.to_string())
                        .env("ALL_REDUCE_PEERS", peers.join(","))
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut child in children {
                assert!(child.wait().unwrap().success());
            }
        }
    }
}

fn rank_main(rank: usize, repeats: usize) {
    let peers: Vec<SocketAddr> =
        std::env::var("ALL_REDUCE_PEERS").unwrap().split(',').map(|p| p.parse().unwrap()).collect();
    let listener = TcpListener::bind(peers[rank]).unwrap();
    let mut config = RingConfig::default();
    if let Some(bytes) = std::env::var("ALL_REDUCE_SEGMENT_BYTES").ok().and_then(|b| b.parse().ok()) {
        config.segment_bytes = bytes;
    }
    let mut ring = TcpRing::connect(rank, listener, &peers, &config).unwrap();
    for mib in SIZES_MIB {
        let mut buffer = vec![1.0f32; mib << 18];
        ring.all_reduce_sum(&mut buffer).unwrap();
        let mut seconds = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            ring.barrier().unwrap();
            let started = Instant::now();
            ring.all_reduce_sum(&mut buffer).unwrap();
            seconds.push(started.elapsed().as_secs_f64());
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        if rank == 0 {
            let bytes = buffer.len() * 4;
            println!(
                "{{\"impl\": \"dgr-ring\", \"ranks\": {}, \"bytes\": {bytes}, \"seconds\": {median:.6}, \"bytes_per_second\": {:.1}}}",
                peers.len(),
                bytes as f64 / median
            );
        }
    }
}
