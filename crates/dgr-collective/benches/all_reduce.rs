//! The TCP ring's all-reduce between processes of this machine: the Rust half of
//! scripts/bench/all_reduce.sh (torch.distributed's gloo is the other).
//!
//! `cargo bench -p dgr-collective --bench all_reduce -- [RANKS [REPEATS]]` starts RANKS
//! processes (default 2) that join one ring on loopback, all-reduce buffers of 1 to 256 MiB
//! (`REPEATS` timed runs after one warm-up, default 5) and print, from rank 0, one JSON line per
//! size: bytes, the median seconds, and the algorithm bandwidth (bytes / seconds).
//! `ALL_REDUCE_SEGMENT_BYTES` overrides the ring's segment size.
//!
//! With `--features cuda` and `ALL_REDUCE_BACKEND=nccl`, the same measurement runs NCCL on
//! device buffers (the GPU check, scripts/device-check.sh): rank `r` uses GPU
//! `r % ALL_REDUCE_GPUS` (default 1: every rank on GPU 0), the parent makes the communicator's
//! id, and every rank checks the sums it got.

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
            let nccl_id = nccl::id_for_children();
            let children: Vec<_> = (0..ranks)
                .map(|rank| {
                    Command::new(std::env::current_exe().unwrap())
                        .args([ranks.to_string(), repeats.to_string()])
                        .env("ALL_REDUCE_RANK", rank.to_string())
                        .env("ALL_REDUCE_PEERS", peers.join(","))
                        .env("ALL_REDUCE_NCCL_ID", &nccl_id)
                        .spawn()
                        .unwrap()
                })
                .collect();
            let failed = children.into_iter().filter_map(|mut child| child.wait().ok()).any(|s| !s.success());
            if failed {
                eprintln!("a rank failed (see above)");
                std::process::exit(1);
            }
        }
    }
}

fn rank_main(rank: usize, repeats: usize) {
    if std::env::var("ALL_REDUCE_BACKEND").as_deref() == Ok("nccl") {
        return nccl::rank_main(rank, repeats);
    }
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
        if rank == 0 {
            report("dgr-ring", peers.len(), buffer.len() * 4, seconds);
        }
    }
}

fn report(implementation: &str, ranks: usize, bytes: usize, mut seconds: Vec<f64>) {
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "{{\"impl\": \"{implementation}\", \"ranks\": {ranks}, \"bytes\": {bytes}, \"seconds\": {median:.6}, \"bytes_per_second\": {:.1}}}",
        bytes as f64 / median
    );
}

#[cfg(feature = "cuda")]
mod nccl {
    use std::time::Instant;

    use dgr_collective::nccl::{NcclCollective, unique_id};

    use super::{SIZES_MIB, report};

    /// The communicator's id, hex-encoded, when the NCCL backend is asked for (else empty).
    pub fn id_for_children() -> String {
        if std::env::var("ALL_REDUCE_BACKEND").as_deref() != Ok("nccl") {
            return String::new();
        }
        match unique_id() {
            Ok(id) => id.iter().map(|b| format!("{b:02x}")).collect(),
            Err(error) => {
                eprintln!("NCCL: {error}");
                std::process::exit(1);
            }
        }
    }

    pub fn rank_main(rank: usize, repeats: usize) {
        if let Err(error) = run(rank, repeats) {
            eprintln!("rank {rank}: {error}");
            std::process::exit(1);
        }
    }

    fn run(rank: usize, repeats: usize) -> Result<(), String> {
        let hex = std::env::var("ALL_REDUCE_NCCL_ID").map_err(|_| "no ALL_REDUCE_NCCL_ID".to_string())?;
        let mut id = [0u8; 128];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = hex.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("bad NCCL id")?;
        }
        let ranks: usize = std::env::var("ALL_REDUCE_PEERS").map_err(|e| e.to_string())?.split(',').count();
        let gpus: usize = std::env::var("ALL_REDUCE_GPUS").ok().and_then(|g| g.parse().ok()).unwrap_or(1).max(1);
        let mut nccl = NcclCollective::new(rank % gpus, rank, ranks, &id).map_err(|e| e.to_string())?;
        for mib in SIZES_MIB {
            let host = vec![1.0f32; mib << 18];
            let mut buffer = nccl.stream().clone_htod(&host).map_err(|e| format!("{e:?}"))?;
            let mut seconds = Vec::with_capacity(repeats);
            for round in 0..=repeats {
                let started = Instant::now();
                nccl.all_reduce_device(&mut buffer).map_err(|e| e.to_string())?;
                if round > 0 {
                    seconds.push(started.elapsed().as_secs_f64());
                }
            }
            let back = nccl.stream().clone_dtoh(&buffer).map_err(|e| format!("{e:?}"))?;
            let expected = (ranks as f32).powi(repeats as i32 + 1);
            if back.iter().any(|&v| v != expected) {
                return Err(format!("wrong sum at {mib} MiB: expected {expected} everywhere"));
            }
            if rank == 0 {
                report("nccl", ranks, host.len() * 4, seconds);
            }
        }
        Ok(())
    }
}

#[cfg(not(feature = "cuda"))]
mod nccl {
    pub fn id_for_children() -> String {
        if std::env::var("ALL_REDUCE_BACKEND").as_deref() == Ok("nccl") {
            eprintln!("ALL_REDUCE_BACKEND=nccl needs `--features cuda`");
            std::process::exit(1);
        }
        String::new()
    }

    pub fn rank_main(_rank: usize, _repeats: usize) {}
}
