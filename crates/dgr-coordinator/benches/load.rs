//! Load test of the coordinator: many simulated workers leasing tiny shards from one
//! coordinator on loopback. Each fake worker registers, then loops lease -> write a small
//! output file -> complete, until the job is done. Reports leases per second and the latency
//! percentiles of lease and complete calls (the completion includes the server's checksum of
//! the file).
//!
//! `cargo bench -p dgr-coordinator --bench load` (env: DGR_LOAD_WORKERS, default 1000;
//! DGR_LOAD_SHARDS, default 20000).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dgr_coordinator::api::{CompleteRequest, CompleteResponse, LeaseResponse};
use dgr_coordinator::client::Client;
use dgr_coordinator::ledger::{JobSpec, Ledger};
use dgr_coordinator::server::{Service, ServiceConfig, now, serve};
use sha2::{Digest, Sha256};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers = env("DGR_LOAD_WORKERS", 1000);
    let shards = env("DGR_LOAD_SHARDS", 20_000);
    let dir = tempfile::tempdir()?;
    let output_dir = dir.path().join("out");
    std::fs::create_dir_all(output_dir.join("attempts"))?;
    let job = JobSpec {
        stage: "load".into(),
        split: "train".into(),
        shards: (0..shards as u64).map(|i| (i, 1)).collect(),
        output_dir: output_dir.clone(),
        fingerprint: "load test".into(),
    };
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite"), job, now())?;
    let token = "load-test-token";
    let config =
        ServiceConfig { token: token.into(), lease_seconds: 60.0, heartbeat_seconds: 10.0, max_body_bytes: 65536 };
    let service = Service::new(ledger, config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(serve(listener, service, async move {
        let _ = stopped.await;
    }));

    let lease_ms = Arc::new(Mutex::new(Vec::with_capacity(shards + workers)));
    let complete_ms = Arc::new(Mutex::new(Vec::with_capacity(shards)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = Client::new(&url, token, Duration::from_secs(30))?;
        let (lease_ms, complete_ms, attempts) = (lease_ms.clone(), complete_ms.clone(), output_dir.join("attempts"));
        tasks.push(tokio::spawn(async move {
            let worker = client.register(&format!("fake-{w}"), "load").await?.worker_id;
            loop {
                let t = Instant::now();
                let lease = client.lease(worker).await?;
                lease_ms.lock().map_err(|e| e.to_string())?.push(t.elapsed().as_secs_f64() * 1000.0);
                let (lease_id, shard) = match lease {
                    LeaseResponse::Done => return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(()),
                    LeaseResponse::Wait { retry_after_seconds } => {
                        tokio::time::sleep(Duration::from_secs_f64(retry_after_seconds.min(0.05))).await;
                        continue;
                    }
                    LeaseResponse::Leased { lease_id, shard } => (lease_id, shard),
                };
                let file = format!("shard-{}.lease-{lease_id}.arrow", shard.id);
                let bytes = format!("shard {} first {}\n", shard.id, shard.first).into_bytes();
                tokio::fs::write(attempts.join(&file), &bytes).await?;
                let sha256 = format!("{:x}", Sha256::digest(&bytes));
                let t = Instant::now();
                let answer =
                    client.complete(&CompleteRequest { lease_id, shard: shard.id, file, sha256, rows: 1 }).await?;
                complete_ms.lock().map_err(|e| e.to_string())?.push(t.elapsed().as_secs_f64() * 1000.0);
                if matches!(
                    answer,
                    CompleteResponse::Accepted { job_done: true } | CompleteResponse::Duplicate { job_done: true }
                ) {
                    return Ok(());
                }
            }
        }));
    }
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await??;
    let mut lease = lease_ms.lock().map_err(|e| e.to_string())?.clone();
    let mut complete = complete_ms.lock().map_err(|e| e.to_string())?.clone();
    println!("workers {workers}, shards {shards}, wall {seconds:.2} s");
    println!("leases granted per second: {:.0}", shards as f64 / seconds);
    println!(
        "lease call ms: p50 {:.2} p99 {:.2} max {:.2} ({} calls)",
        percentile(&mut lease, 0.5),
        percentile(&mut lease, 0.99),
        percentile(&mut lease, 1.0),
        lease.len()
    );
    println!(
        "complete call ms: p50 {:.2} p99 {:.2} max {:.2} ({} calls)",
        percentile(&mut complete, 0.5),
        percentile(&mut complete, 0.99),
        percentile(&mut complete, 1.0),
        complete.len()
    );
    Ok(())
}
