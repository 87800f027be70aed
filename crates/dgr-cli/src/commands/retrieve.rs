//! `dgr retrieve`: generative retrieval of a split in this process (dgr_pipeline::retrieve).

use std::path::PathBuf;

use clap::ValueEnum;
use dgr_pipeline::Config;
use dgr_pipeline::retrieve::{RetrieveTask, Student, retrieve_split};
use figment::Figment;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Split of the job's dataset to retrieve for (queries-<split>.arrow).
    #[arg(long, default_value = "dev")]
    split: String,
    /// Only the first N queries of the split (a quick look, or a benchmark).
    #[arg(long)]
    limit: Option<usize>,
    /// The student that retrieves.
    #[arg(long, value_enum, default_value_t = StudentArg::Gr)]
    student: StudentArg,
    /// Student directory (default: retrieve.model, else <job.dir>/stage1/weights/final).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Index directory (default: <job.dir>/index).
    #[arg(long)]
    index_dir: Option<PathBuf>,
    /// Beam width (default: retrieve.search.beam).
    #[arg(long)]
    beam: Option<usize>,
    /// Threads, each decoding its own batch (default: retrieve.threads; 0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Queries decoded together (default: retrieve.batch_queries).
    #[arg(long)]
    batch_queries: Option<usize>,
}

impl Args {
    pub fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(beam) = self.beam {
            figment = figment.merge(("retrieve.search.beam", beam));
        }
        if let Some(threads) = self.threads {
            figment = figment.merge(("retrieve.threads", threads));
        }
        if let Some(batch) = self.batch_queries {
            figment = figment.merge(("retrieve.batch_queries", batch));
        }
        if let Some(model) = &self.model {
            figment = figment.merge(("retrieve.model", model));
        }
        figment
    }
}

/// Which student retrieves (`gr`: stage 1, `dgr`: stage 2).
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum StudentArg {
    /// The stage-1 student: runs/gr-<split>.trec, candidates/<split>/.
    #[default]
    Gr,
    /// The distilled student (<job.dir>/stage2/weights/final): runs/dgr-<split>.trec,
    /// candidates/dgr/<split>/.
    Dgr,
}

impl From<StudentArg> for Student {
    fn from(student: StudentArg) -> Self {
        match student {
            StudentArg::Gr => Student::Stage1,
            StudentArg::Dgr => Student::Stage2,
        }
    }
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<()> {
    let task = RetrieveTask {
        split: args.split.clone(),
        student: args.student.into(),
        limit: args.limit,
        index_dir: args.index_dir.clone(),
    };
    Ok(retrieve_split(config, &task, &Bar::new())?)
}
