//! `dgr index`: build the FM-index (dgr_pipeline::index), look texts up in it.

use std::path::PathBuf;

use dgr_model::tokenizer::TextTokenizer;
use dgr_pipeline::Config;
use dgr_pipeline::index::{build, open_index};

use crate::progress::Bar;

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

pub fn run(config: &Config, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Build { corpus, index_dir } => {
            let corpus = corpus.clone().unwrap_or_else(|| config.job.data_dir().join("corpus.arrow"));
            let dir = index_dir.clone().unwrap_or_else(|| config.job.index_dir());
            build(config, &corpus, &dir, &Bar::new())?;
        }
        Command::Inspect { index_dir, limit, text } => {
            let dir = index_dir.clone().unwrap_or_else(|| config.job.index_dir());
            let (index, _) = open_index(config, &dir)?;
            let tokenizer = TextTokenizer::unlimited(&config.index.tokenizer)?;
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
