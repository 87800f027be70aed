//! The index stage: the FM-index of the corpus in the student's token ids (method §2).

use std::path::Path;

use crate::config::Config;
use crate::error::{Context, Result, bail};
use dgr_core::Passage;
use dgr_core::arrow_file::read_records;
use dgr_core::import::sha256_file;
use dgr_core::progress::{Progress, Unit};
use dgr_index::layout::passage_layout;
use dgr_index::store::{self, IndexManifest, Provenance};
use dgr_index::{CorpusIndex, IndexBuilder};
use dgr_model::tokenizer::TextTokenizer;
use tracing::info;

/// Passages tokenised per batch (the tokenizer is parallel within a batch).
const BATCH: usize = 1024;

/// Opens the index in `dir`, refusing it unless it was built with `index.tokenizer`.
pub fn open_index(config: &Config, dir: &Path) -> Result<(CorpusIndex, IndexManifest)> {
    let (index, manifest) = store::open(dir).context("cannot open the FM-index (build it with `dgr index build`)")?;
    let tokenizer = &config.index.tokenizer;
    if sha256_file(tokenizer)?.1 != manifest.tokenizer_sha256 {
        bail!("{} is not the tokenizer the index in {} was built with", tokenizer.display(), dir.display());
    }
    Ok((index, manifest))
}

/// Builds the FM-index of `corpus` (in the tokens of `index.tokenizer`) into `dir`.
pub fn build(config: &Config, corpus: &Path, dir: &Path, progress: &dyn Progress) -> Result<IndexManifest> {
    let tokenizer_path = &config.index.tokenizer;
    let tokenizer = TextTokenizer::unlimited(tokenizer_path)?;
    let passages: Vec<Passage> = read_records(corpus).context("cannot read the corpus (run `dgr prepare` first?)")?;
    let vocab = u32::try_from(tokenizer.vocab_size()).ok().context("vocabulary too large")?;
    let mut builder = IndexBuilder::new(vocab)?;
    progress.begin("tokenise", passages.len() as u64, Unit::Items);
    for chunk in passages.chunks(BATCH) {
        let texts = chunk.iter().map(passage_layout).collect();
        for (passage, tokens) in chunk.iter().zip(tokenizer.tokens(texts)?) {
            builder.add(&passage.id, &tokens)?;
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let started = std::time::Instant::now();
    let index = builder.build(config.index.sample_rate)?;
    let provenance =
        Provenance { tokenizer_sha256: sha256_file(tokenizer_path)?.1, corpus_sha256: sha256_file(corpus)?.1 };
    let manifest = store::save(&index, dir, &provenance)?;
    info!(
        passages = manifest.passages,
        tokens = manifest.tokens,
        bytes = manifest.index_bytes,
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        dir = %dir.display(),
        "index built"
    );
    Ok(manifest)
}
