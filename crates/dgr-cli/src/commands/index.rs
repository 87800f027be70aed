//! `dgr index`: the FM-index of the corpus in the student's token ids (method §2).

use std::path::{Path, PathBuf};

use crate::config::Config;
use anyhow::{Context, bail};
use dgr_core::Passage;
use dgr_core::arrow_file::read_records;
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_index::layout::passage_layout;
use dgr_index::store::{self, IndexManifest, Provenance};
use dgr_index::{CorpusIndex, IndexBuilder};
use dgr_model::tokenizer::TextTokenizer;
use tracing::info;

use crate::progress::Bar;

/// Passages tokenised per batch (the tokenizer is parallel within a batch).
const BATCH: usize = 1024;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build the index of a corpus.arrow (replaces an existing index).
    Build {
        /// Corpus file (default: <job.dir>/data/corpus.arrow).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Index directory (default: <job.dir>/index).
        #[arg(long)]
        index_dir: Option<PathBuf>,
    },
    /// Look a text up: its token ids, occurrences, passages and the tokens that may follow it.
    Inspect {
        /// Index directory (default: <job.dir>/index).
        #[arg(long)]
        index_dir: Option<PathBuf>,
        /// Passages to list at most.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        text: String,
    },
}

/// Opens the index in `dir`, refusing it unless it was built with `index.tokenizer`.
pub fn open_index(config: &Config, dir: &Path) -> anyhow::Result<(CorpusIndex, IndexManifest)> {
    let (index, manifest) = store::open(dir).context("cannot open the FM-index (build it with `dgr index build`)")?;
    let tokenizer = &config.index.tokenizer;
    if sha256_file(tokenizer)?.1 != manifest.tokenizer_sha256 {
        bail!("{} is not the tokenizer the index in {} was built with", tokenizer.display(), dir.display());
    }
    Ok((index, manifest))
}

pub fn run(config: &Config, command: &Command) -> anyhow::Result<()> {
    let tokenizer_path = &config.index.tokenizer;
    let tokenizer = TextTokenizer::unlimited(tokenizer_path)?;
    match command {
        Command::Build { corpus, index_dir } => {
            let corpus = corpus.clone().unwrap_or_else(|| config.job.data_dir().join("corpus.arrow"));
            let dir = index_dir.clone().unwrap_or_else(|| config.job.index_dir());
            let passages: Vec<Passage> =
                read_records(&corpus).context("cannot read the corpus (run `dgr prepare` first?)")?;
            let vocab = u32::try_from(tokenizer.vocab_size()).context("vocabulary too large")?;
            let mut builder = IndexBuilder::new(vocab)?;
            let bar = Bar::new();
            bar.begin("tokenise", passages.len() as u64, Unit::Items);
            for chunk in passages.chunks(BATCH) {
                let texts = chunk.iter().map(passage_layout).collect();
                for (passage, tokens) in chunk.iter().zip(tokenizer.tokens(texts)?) {
                    builder.add(&passage.id, &tokens)?;
                }
                bar.advance(chunk.len() as u64);
            }
            bar.finish();
            let started = std::time::Instant::now();
            let index = builder.build(config.index.sample_rate)?;
            let provenance =
                Provenance { tokenizer_sha256: sha256_file(tokenizer_path)?.1, corpus_sha256: sha256_file(&corpus)?.1 };
            let manifest = store::save(&index, &dir, &provenance)?;
            info!(
                passages = manifest.passages,
                tokens = manifest.tokens,
                bytes = manifest.index_bytes,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                dir = %dir.display(),
                "index built"
            );
        }
        Command::Inspect { index_dir, limit, text } => {
            let dir = index_dir.clone().unwrap_or_else(|| config.job.index_dir());
            let (index, _) = open_index(config, &dir)?;
            let tokens = tokenizer.tokens(vec![text.clone()])?.pop().unwrap_or_default();
            let prefix = index.prefix(&tokens);
            let count = prefix.count();
            println!("tokens: {tokens:?}\noccurrences: {count} (corpus: {} tokens)", index.total_tokens());
            for occurrence in index.locate(&tokens, *limit) {
                let id = index.passage_id(occurrence.passage).unwrap_or("?");
                println!("  passage {id} at token {}", occurrence.offset);
            }
            if count > 0 {
                let mut next = index.next_tokens(&prefix);
                next.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
                let shown: Vec<String> = next.iter().take(*limit).map(|(t, c)| format!("{t} ({c})")).collect();
                println!("next tokens ({} distinct): {}", next.len(), shown.join(", "));
            }
        }
    }
    Ok(())
}
