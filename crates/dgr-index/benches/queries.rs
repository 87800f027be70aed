//! Index speed on a built index directory: rebuild time and size per million tokens, and the
//! latency of the queries constrained decoding and scoring make (next tokens, extend, count,
//! locate), p50/p99 over n-grams drawn from the corpus itself.
//!
//! `DGR_BENCH_INDEX=work/demo/index cargo bench -p dgr-index --bench queries`
//! (`DGR_BENCH_SAMPLES`: n-grams per measurement, default 20000). Prints one JSON object.

use std::time::Instant;

use dgr_index::{IndexBuilder, Prefix, store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let dir = std::env::var("DGR_BENCH_INDEX").unwrap_or_else(|_| "work/demo/index".into());
    let samples: usize = std::env::var("DGR_BENCH_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let started = Instant::now();
    let (index, manifest) = match store::open(std::path::Path::new(&dir)) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("cannot open {dir}: {e} (build one with `dgr index build`, set DGR_BENCH_INDEX)");
            std::process::exit(2);
        }
    };
    let open_seconds = started.elapsed().as_secs_f64();

    // Rebuild from the index's own passages (tokenisation is not part of the index build).
    let passages: Vec<Vec<u32>> = (0..index.passages() as u32).map(|p| index.passage_tokens(p)).collect();
    let started = Instant::now();
    let mut builder = IndexBuilder::new(index.vocab_size()).expect("vocabulary of an opened index");
    for (i, tokens) in passages.iter().enumerate() {
        builder.add(index.passage_id(i as u32).unwrap_or_default(), tokens).expect("tokens of an opened index");
    }
    let rebuilt = builder.build(index.sample_rate()).expect("rebuild");
    let build_seconds = started.elapsed().as_secs_f64();
    assert_eq!(rebuilt.total_tokens(), index.total_tokens());

    let mut rng = StdRng::seed_from_u64(7);
    let ngrams: Vec<Vec<u32>> = (0..samples)
        .filter_map(|_| {
            let p = &passages[rng.random_range(0..passages.len())];
            (!p.is_empty()).then(|| {
                let start = rng.random_range(0..p.len());
                let len = rng.random_range(1..=10).min(p.len() - start);
                p[start..start + len].to_vec()
            })
        })
        .collect();
    let prefixes: Vec<Prefix> = ngrams.iter().map(|g| index.prefix(g)).collect();

    let next = time_each(&prefixes, |p| index.next_tokens(p).len());
    let parents: Vec<(Prefix, u32)> =
        ngrams.iter().map(|g| (index.prefix(&g[..g.len() - 1]), g[g.len() - 1])).collect();
    let extend = time_each(&parents, |(prefix, token)| index.extend(prefix, *token).count() as usize);
    let count = time_each(&ngrams, |g| index.count(g) as usize);
    let locate = time_each(&ngrams, |g| index.locate(g, 100).len());
    let root_next = time_each(&[index.root()], |p| index.next_tokens(p).len());

    let million = index.total_tokens() as f64 / 1e6;
    let report = serde_json::json!({
        "index": dir,
        "passages": index.passages(),
        "tokens": index.total_tokens(),
        "sample_rate": index.sample_rate(),
        "index_bytes": manifest.index_bytes,
        "bytes_per_million_tokens": manifest.index_bytes as f64 / million,
        "open_seconds": open_seconds,
        "build_seconds": build_seconds,
        "build_seconds_per_million_tokens": build_seconds / million,
        "samples": ngrams.len(),
        "next_tokens_us": next,
        "next_tokens_after_empty_prefix_us": root_next,
        "extend_one_token_us": extend,
        "count_us": count,
        "locate_100_us": locate,
    });
    println!("{report}");
}

/// p50 / p99 / mean of `f` over `items`, in microseconds.
fn time_each<T>(items: &[T], mut f: impl FnMut(&T) -> usize) -> serde_json::Value {
    let mut micros = Vec::with_capacity(items.len());
    let mut sink = 0usize;
    for item in items {
        let started = Instant::now();
        sink = sink.wrapping_add(f(item));
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    std::hint::black_box(sink);
    let mean = micros.iter().sum::<f64>() / micros.len().max(1) as f64;
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros.get(((micros.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    serde_json::json!({ "p50": at(0.5), "p99": at(0.99), "mean": mean })
}
