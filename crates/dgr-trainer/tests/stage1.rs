//! Stage-1 training on title pairs of the wiki-vital fixture subset: BERT2BERT warm-started from
//! the real MiniLM weights, and a small BART with fresh weights on MiniLM's vocabulary.

use std::path::Path;

use burn::tensor::Device;
use dgr_core::Passage;
use dgr_core::arrow_file::read_records;
use dgr_core::import::{DatasetFormat, ImportOptions, import};
use dgr_core::progress::NoProgress;
use dgr_model::bert2bert::Bert2Bert;
use dgr_model::seq2seq::Seq2SeqConfig;
use dgr_model::student::{Student, StudentConfig};
use dgr_model::tokenizer::TextTokenizer;
use dgr_trainer::checkpoint::RunIdentity;
use dgr_trainer::engine::{EngineConfig, RunSetup, StepLog, train};
use dgr_trainer::pairs::{PairConfig, TrainingPair, supervised_pairs};
use dgr_trainer::stage1::GenerationObjective;
use rand::SeedableRng;

fn config(steps: u64) -> EngineConfig {
    EngineConfig {
        batch_size: 4,
        steps,
        accumulation: 1,
        learning_rate: 2e-4,
        warmup_steps: 2,
        weight_decay: 0.01,
        clip_norm: 1.0,
        checkpoint_every: 4,
        keep_checkpoints: 3,
        eval_every: 0,
        eval_queries: 0,
        seed: 42,
    }
}

#[test]
fn titles_are_learned_and_weights_are_saved_loadable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let minilm = root.join("assets/minilm");
    assert!(minilm.join("model.safetensors").is_file(), "MiniLM weights missing: run scripts/fetch-assets.sh");
    let tmp = tempfile::tempdir().unwrap();
    let pairs = title_pairs(&root, tmp.path());

    let device = Device::flex().autodiff();
    device.seed(42);
    let source_tokenizer = TextTokenizer::from_file(&minilm.join("tokenizer.json"), 32).unwrap();
    let (model, model_config) = Student::load_or_warm_start(&minilm, &source_tokenizer, &device).unwrap();
    let target_tokenizer = TextTokenizer::from_file(&minilm.join("tokenizer.json"), 16).unwrap();
    let out = tmp.path().join("stage1");
    let mut seen: Vec<StepLog> = Vec::new();
    let mut objective =
        GenerationObjective::new(pairs.clone(), source_tokenizer.clone(), target_tokenizer.clone(), 0, 0.0);
    let setup = RunSetup::new(&out, RunIdentity::default(), false);
    train(model, &model_config, &mut objective, &config(12), setup, |s, _, _| {
        seen.push(s.clone());
        Ok(())
    })
    .unwrap();

    assert_eq!(seen.len(), 12);
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 12);
    let mean = |s: &[StepLog]| s.iter().map(|l| l.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&seen[..3]), mean(&seen[9..]));
    assert!(seen.iter().all(|l| l.loss.is_finite()));
    assert!(last < first * 0.7, "loss should fall: {:?}", seen.iter().map(|l| l.loss).collect::<Vec<_>>());
    let accuracy = |s: &[StepLog]| s.iter().map(|l| l.measures["accuracy"]).sum::<f64>() / s.len() as f64;
    assert!(accuracy(&seen[9..]) > accuracy(&seen[..3]), "accuracy should rise: {seen:?}");
    assert!(
        seen.iter()
            .all(|l| l.measures["nll"] >= 0.0 && l.grad_norm > 0.0 && (0.0..=1.0).contains(&l.measures["accuracy"]))
    );

    for name in ["step-0000004", "step-0000008", "step-0000012"] {
        assert!(out.join("checkpoints").join(name).join("model/model.safetensors").is_file(), "{name}");
    }
    assert!(out.join("weights/final/model.safetensors").is_file());
    let (_, config_again, report) = Bert2Bert::load(&out.join("weights/final"), &Device::flex()).unwrap();
    assert_eq!(StudentConfig::Bert2Bert(config_again), model_config);
    assert!(report.applied > 100);
}

/// Title pairs of 8 articles of the fixture (their own titles as queries), a task a few steps
/// can learn.
fn title_pairs(root: &Path, tmp: &Path) -> Vec<TrainingPair> {
    let data = tmp.join("data");
    let input = root.join("tests/fixtures/wiki-vital/summaries_subset.json");
    import(DatasetFormat::WikiVital, &input, &data, &ImportOptions::default(), &NoProgress).unwrap();
    let corpus: Vec<Passage> = read_records(&data.join("corpus.arrow")).unwrap();
    let pair_config = PairConfig { titles: 1, spans: 0, pseudo_queries: 0, ..PairConfig::default() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let pairs: Vec<_> =
        corpus.iter().take(8).flat_map(|p| supervised_pairs(&p.title, p, &pair_config, &mut rng)).collect();
    assert_eq!(pairs.len(), 8);
    pairs
}

#[test]
fn a_bart_student_learns_titles_and_is_saved_as_bart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let minilm = root.join("assets/minilm");
    let tmp = tempfile::tempdir().unwrap();
    let pairs = title_pairs(&root, tmp.path());
    // A small BART on MiniLM's vocabulary and special tokens ([CLS] starts, [PAD] pads).
    let bart = Seq2SeqConfig {
        model_type: "bart".into(),
        vocab_size: 30522,
        d_model: 64,
        encoder_layers: 1,
        decoder_layers: 1,
        encoder_attention_heads: 2,
        decoder_attention_heads: 2,
        encoder_ffn_dim: 128,
        decoder_ffn_dim: 128,
        max_position_embeddings: 64,
        activation_function: "gelu".into(),
        scale_embedding: false,
        pad_token_id: 0,
        decoder_start_token_id: 101,
        normalize_before: false,
        init_std: 0.02,
    };
    let init = tmp.path().join("bart");
    let device = Device::flex();
    device.seed(7);
    bart.init(&device).save(&init, &bart).unwrap();

    let device = Device::flex().autodiff();
    let source_tokenizer = TextTokenizer::from_file(&minilm.join("tokenizer.json"), 32).unwrap();
    let (model, model_config) = Student::load_or_warm_start(&init, &source_tokenizer, &device).unwrap();
    assert!(matches!(model, Student::Bart(_)));
    assert_eq!(model_config, StudentConfig::Bart(bart));
    let target_tokenizer = TextTokenizer::from_file(&minilm.join("tokenizer.json"), 16).unwrap();
    let mut objective =
        GenerationObjective::new(pairs.clone(), source_tokenizer.clone(), target_tokenizer.clone(), 0, 0.0);
    let out = tmp.path().join("stage1");
    let mut losses = Vec::new();
    let engine = EngineConfig { learning_rate: 3e-3, ..config(16) };
    train(
        model,
        &model_config,
        &mut objective,
        &engine,
        RunSetup::new(&out, RunIdentity::default(), false),
        |s, _, _| {
            losses.push(s.loss);
            Ok(())
        },
    )
    .unwrap();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(mean(&losses[12..]) < 0.8 * mean(&losses[..4]), "loss should fall: {losses:?}");
    let (saved, saved_config) = Student::load(&out.join("weights/final"), &Device::flex()).unwrap();
    assert!(matches!(saved, Student::Bart(_)));
    assert_eq!(saved_config, model_config);
}
