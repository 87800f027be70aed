//! Model speed on this machine's CPU, the Rust half of the side-by-side benchmark
//! `scripts/bench/model_speed.sh` (the PyTorch half is scripts/bench/model_speed_torch.py).
//!
//! Prints one JSON object per measurement (median seconds, and the process's peak RSS):
//! - `encoder`: MiniLM (real weights, assets/minilm) forward at batch 32 x 128 tokens, the cost
//!   of teacher scoring: sequences/s;
//! - `train_step`: student (BART layout) forward + backward + AdamW at batch 16, source 64,
//!   target 16, two sizes: `tiny` and `minilm-size` (d 384, 6+6 layers, 12 heads, ffn 1536,
//!   vocab 30522).
//!
//! Environment: RAYON_NUM_THREADS (threads), DGR_BENCH_REPEATS (timed runs after one warm-up),
//! DGR_BENCH_BATCH / DGR_BENCH_SOURCE / DGR_BENCH_TARGET / DGR_BENCH_LENGTH (shapes),
//! DGR_BENCH_BACKEND = flex (default) | ndarray (build with `--features ndarray` or `openblas`)
//! | cuda (build with `--features cuda`; GPU 0), DGR_BENCH_MINILM (the encoder's directory,
//! default assets/minilm; without `model.safetensors` the encoder has MiniLM's shape from its
//! `config.json` and random weights: the same speed, for a machine without the weights),
//! DGR_BENCH_GLIBC_DEFAULTS (set: leave malloc's defaults, see `dgr_model::allocator`).
//! Run: `cargo bench -p dgr-model --bench speed [encoder|train-tiny|train-minilm]`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor};
use dgr_model::bert::{BertConfig, EncoderInput};
use dgr_model::heads::BiEncoder;
use dgr_model::seq2seq::{EncoderDecoder, Seq2SeqConfig, Source};

/// A shape knob from the environment, else `default`.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The CPU backend under test and its name in the output.
fn backend() -> (Device, String) {
    match std::env::var("DGR_BENCH_BACKEND").as_deref() {
        #[cfg(feature = "ndarray")]
        Ok("ndarray") => {
            let blas = if cfg!(feature = "openblas") { " + openblas" } else { "" };
            (Device::ndarray(), format!("dgr (burn ndarray{blas})"))
        }
        #[cfg(feature = "cuda")]
        Ok("cuda") => match dgr_model::device::select(dgr_model::device::DeviceKind::Cuda, 0) {
            Ok(device) => (device, "dgr (burn cuda)".into()),
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(1);
            }
        },
        Ok("flex") | Err(_) => (Device::flex(), "dgr (burn flex)".into()),
        Ok(other) => panic!(
            "DGR_BENCH_BACKEND={other}: not built in (flex; ndarray with --features ndarray; cuda with --features cuda)"
        ),
    }
}

/// Peak resident memory of this process so far, in MiB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ids(batch: usize, length: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<2>::random([batch, length], Distribution::Uniform(3.0, vocab as f64 - 1.0), device).int()
}

fn bench_encoder(root: &Path, repeats: usize) {
    let (device, system) = backend();
    let dir = std::env::var_os("DGR_BENCH_MINILM").map_or_else(|| root.join("assets/minilm"), PathBuf::from);
    let (model, config, name) = if dir.join("model.safetensors").is_file() {
        let (model, config, _) = BiEncoder::load(&dir, &device).expect("run scripts/fetch-assets.sh");
        (model, config, "all-MiniLM-L6-v2")
    } else {
        let config = BertConfig::from_file(&dir.join("config.json")).expect("a BERT config.json in DGR_BENCH_MINILM");
        (BiEncoder { bert: config.init(&device) }, config, "MiniLM-L6 shape, random weights")
    };
    let (batch, length) = (knob("DGR_BENCH_BATCH", 32), knob("DGR_BENCH_LENGTH", 128));
    let input = EncoderInput {
        input_ids: ids(batch, length, config.vocab_size, &device),
        token_type_ids: Tensor::zeros([batch, length], &device),
        attention_mask: Tensor::ones([batch, length], &device),
    };
    let mut times = Vec::new();
    for i in 0..=repeats {
        let start = Instant::now();
        let out = model.embed(&input);
        let _ = out.into_data();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let s = median(times);
    println!(
        r#"{{"bench": "encoder", "system": "{system}", "model": "{name}", "batch": {batch}, "length": {length}, "seconds": {s:.4}, "sequences_per_s": {:.1}, "peak_rss_mb": {:.0}}}"#,
        batch as f64 / s,
        peak_rss_mb()
    );
}

fn student(size: &str) -> Seq2SeqConfig {
    let (vocab, d, layers, heads, ffn) = match size {
        "tiny" => (8000, 128, 2, 4, 512),
        _ => (30522, 384, 6, 12, 1536),
    };
    Seq2SeqConfig {
        model_type: "bart".into(),
        vocab_size: vocab,
        d_model: d,
        encoder_layers: layers,
        decoder_layers: layers,
        encoder_attention_heads: heads,
        decoder_attention_heads: heads,
        encoder_ffn_dim: ffn,
        decoder_ffn_dim: ffn,
        max_position_embeddings: 128,
        activation_function: "gelu".into(),
        scale_embedding: false,
        pad_token_id: 1,
        decoder_start_token_id: 2,
        normalize_before: false,
        init_std: 0.02,
    }
}

fn bench_train_step(size: &str, repeats: usize) {
    let (device, system) = backend();
    let device = device.autodiff();
    device.seed(42);
    let config = student(size);
    let mut model = config.init(&device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let (batch, source_len, target_len) =
        (knob("DGR_BENCH_BATCH", 16), knob("DGR_BENCH_SOURCE", 64), knob("DGR_BENCH_TARGET", 16));
    let source = Source {
        ids: ids(batch, source_len, config.vocab_size, &device),
        mask: Tensor::ones([batch, source_len], &device),
    };
    let labels: Vec<Vec<i64>> = (0..batch)
        .map(|b| (0..target_len).map(|t| 3 + ((b * 31 + t * 7) % (config.vocab_size - 3)) as i64).collect())
        .collect();
    let mut times = Vec::new();
    let mut last_loss = 0.0;
    for i in 0..=repeats {
        let start = Instant::now();
        let loss = model.generation_loss(&source, &labels, 1, 0.1).loss;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-5, model, grads);
        last_loss = loss.into_scalar::<f32>();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let s = median(times);
    let params = model.num_params();
    println!(
        r#"{{"bench": "train_step", "system": "{system}", "size": "{size}", "params": {params}, "batch": {batch}, "source": {source_len}, "target": {target_len}, "seconds": {s:.4}, "loss": {last_loss:.4}, "peak_rss_mb": {:.0}}}"#,
        peak_rss_mb()
    );
}

fn main() {
    if std::env::var_os("DGR_BENCH_GLIBC_DEFAULTS").is_none() {
        dgr_model::allocator::keep_freed_memory();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repeats: usize = std::env::var("DGR_BENCH_REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wants("encoder") {
        bench_encoder(&root, repeats);
    }
    if wants("train-tiny") {
        bench_train_step("tiny", repeats);
    }
    if wants("train-minilm") {
        bench_train_step("minilm-size", repeats);
    }
}
