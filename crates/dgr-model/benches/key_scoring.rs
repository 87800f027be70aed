//! Key scoring speed, the Rust half of `scripts/bench/key_scoring.sh` (the PyTorch half is
//! scripts/bench/key_scoring_torch.py): the teacher-forced log-probabilities of the keys a
//! stage-2 step scores, forward and backward, for real queries' keys.
//!
//! Input: a student directory and a JSON file of queries, each with its views' source token
//! ids and keys (made by scripts/bench/key_scoring_keys.py from a job's candidate shards).
//! Each view's source is encoded once; its keys are scored either packed (a token tree, each
//! shared prefix decoded once: `score_keys_packed`) or one key a padded row (`score_keys`).
//! Prints one JSON object per way: keys/s (median over repeats), decoder positions computed,
//! and the sum of all scores (the two ways and PyTorch must agree on it).
//!
//! Run: `cargo bench -p dgr-model --bench key_scoring -- STUDENT_DIR KEYS_JSON`
//! (RAYON_NUM_THREADS sets threads, DGR_BENCH_REPEATS the timed repeats).

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::key_trie::KeyTrie;
use dgr_model::seq2seq::{EncoderDecoder, Source};

#[derive(serde::Deserialize)]
struct Queries {
    queries: Vec<Query>,
}

#[derive(serde::Deserialize)]
struct Query {
    views: Vec<View>,
}

#[derive(serde::Deserialize)]
struct View {
    source: Vec<u32>,
    keys: Vec<Vec<u32>>,
}

fn main() {
    // As the `dgr` binary does (see `dgr_model::allocator`).
    dgr_model::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let [student, keys] = args.as_slice() else {
        eprintln!("usage: key_scoring STUDENT_DIR KEYS_JSON");
        std::process::exit(2);
    };
    let repeats: usize = std::env::var("DGR_BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let device = Device::flex().autodiff();
    let (model, _, _) = Bert2Bert::load(Path::new(student), &device).expect("a student directory");
    let text = std::fs::read_to_string(keys).expect("a keys file");
    let queries: Queries = serde_json::from_str(&text).expect("a keys file made by key_scoring_keys.py");
    let total_keys: usize = queries.queries.iter().flat_map(|q| &q.views).map(|v| v.keys.len()).sum();

    for packed in [true, false] {
        let mut times = Vec::new();
        let mut sum = 0.0f64;
        let mut positions = 0usize;
        for repeat in 0..=repeats {
            let started = Instant::now();
            (sum, positions) = (0.0, 0);
            for query in &queries.queries {
                let mut scores: Vec<Tensor<1>> = Vec::new();
                for view in &query.views {
                    let n = view.source.len();
                    let ids: Vec<i64> = view.source.iter().map(|&t| i64::from(t)).collect();
                    let source = Source {
                        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device),
                        mask: Tensor::<2, Int>::ones([1, n], &device),
                    };
                    let encoded = model.encode(&source);
                    scores.push(if packed {
                        positions += KeyTrie::new(&view.keys, model.decoder_start()).positions();
                        model.score_keys_packed(&encoded, &view.keys)
                    } else {
                        positions += view.keys.len() * view.keys.iter().map(Vec::len).max().unwrap_or(1);
                        model.score_keys(&encoded, &view.keys)
                    });
                }
                let total = Tensor::cat(scores, 0).sum();
                sum += f64::from(total.clone().into_scalar::<f32>());
                let _grads = total.backward();
            }
            if repeat > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({
                "system": if packed { "dgr packed" } else { "dgr one key a row" },
                "queries": queries.queries.len(),
                "keys": total_keys,
                "positions_decoded": positions,
                "seconds": median,
                "keys_per_second": total_keys as f64 / median,
                "score_sum": sum,
            })
        );
    }
}
