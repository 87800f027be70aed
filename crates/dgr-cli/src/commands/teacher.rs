//! `dgr teacher`: score a split's candidate lists, or import teacher scores made elsewhere
//! (dgr_pipeline::teacher).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use dgr_pipeline::Config;
use dgr_pipeline::teacher::{ImportFormat, ImportRequest, import, score_split};
use figment::Figment;

use crate::progress::Bar;

#[derive(Subcommand)]
pub enum Command {
    /// Score a split's candidate lists with the teacher into <job.dir>/rank_lists/<split>/.
    Score(ScoreArgs),
    /// Turn teacher scores computed elsewhere (DGR JSONL, or `qid pid score` TSV) into
    /// rank-list shards in <job.dir>/rank_lists/<split>/.
    Import(ImportArgs),
}

#[derive(ClapArgs)]
pub struct ScoreArgs {
    /// Split whose candidates are scored (queries-<split>.arrow).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Candidate source: `gr` (dgr retrieve's shards) or `bm25` (runs/bm25-<split>.trec).
    #[arg(long, value_enum)]
    pub candidates: Option<SourceArg>,
    /// Candidates scored per query (default: teacher.depth).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Teacher model directory (default: teacher.model).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SourceArg {
    Gr,
    Bm25,
}

#[derive(ClapArgs)]
pub struct ImportArgs {
    #[arg(long, value_enum)]
    format: FormatArg,
    /// The file of teacher scores.
    #[arg(long)]
    input: PathBuf,
    /// Split the queries belong to.
    #[arg(long, default_value = "train")]
    split: String,
    /// DGR JSONL: the context field holding the teacher's score (default: the only
    /// `score_teacher_*` field).
    #[arg(long)]
    score_field: Option<String>,
    /// Name recorded as the teacher (default: `imported from <input>`).
    #[arg(long)]
    teacher: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    DgrJsonl,
    Tsv,
}

impl Command {
    pub fn overrides(&self) -> Figment {
        match self {
            Command::Score(args) => args.overrides(),
            Command::Import(_) => Figment::new(),
        }
    }
}

impl ScoreArgs {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(source) = self.candidates {
            figment = figment.merge((
                "teacher.candidates",
                match source {
                    SourceArg::Gr => "gr",
                    SourceArg::Bm25 => "bm25",
                },
            ));
        }
        if let Some(depth) = self.depth {
            figment = figment.merge(("teacher.depth", depth));
        }
        if let Some(model) = &self.model {
            figment = figment.merge(("teacher.model", model));
        }
        figment
    }
}

pub fn run(config: &Config, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Score(args) => score_split(config, &args.split, &Bar::new())?,
        Command::Import(args) => {
            let request = ImportRequest {
                format: match args.format {
                    FormatArg::DgrJsonl => ImportFormat::DgrJsonl,
                    FormatArg::Tsv => ImportFormat::Tsv,
                },
                input: args.input.clone(),
                split: args.split.clone(),
                score_field: args.score_field.clone(),
                teacher: args.teacher.clone(),
            };
            import(config, &request)?;
        }
    }
    Ok(())
}
