//! One module per subcommand; `run` dispatches.

mod bm25;
mod distributed;
mod eval;
mod index;
mod pipeline;
mod prepare;
mod retrieve;
mod teacher;
mod train_distill;
mod train_gen;

use std::path::Path;

use clap::Subcommand;
use dgr_pipeline::Config;
use dgr_pipeline::ranks::RankPlace;
use figment::Figment;

#[derive(Subcommand)]
pub enum Command {
    /// Import a dataset (BEIR, MS MARCO, DPR or Wikipedia Vital Articles) into a dgr dataset
    /// directory: corpus.arrow, queries-<split>.arrow, qrels-<split>.tsv, dataset.json.
    Prepare(prepare::Args),
    /// BM25 baseline: build an index over a corpus, search queries into a TREC run.
    #[command(subcommand)]
    Bm25(bm25::Command),
    /// FM-index of the corpus in the student's token ids: build it, look texts up.
    #[command(subcommand)]
    Index(index::Command),
    /// Evaluate a TREC run: Recall@k, MRR@10, nDCG@10 against qrels, and/or answer-hit R@k.
    Eval(eval::Args),
    /// Stage 1: train the BERT2BERT student (warm-started from MiniLM) to generate the
    /// identifiers of relevant passages; writes <job.dir>/stage1/.
    TrainGen(train_gen::Args),
    /// Stage 2 (DGR): train the stage-1 student so that its passage scores follow the
    /// teacher's order of the train queries' candidates; writes <job.dir>/stage2/.
    TrainDistill(train_distill::Args),
    /// Generative retrieval with the stage-1 student over the FM-index: a TREC run
    /// (<job.dir>/runs/gr-<split>.trec) and candidate shards (<job.dir>/candidates/<split>/).
    Retrieve(retrieve::Args),
    /// Teacher stage: rank each query's candidates with a bi-encoder or cross-encoder teacher
    /// into rank-list shards (<job.dir>/rank_lists/<split>/), or import scores made elsewhere.
    #[command(subcommand)]
    Teacher(teacher::Command),
    /// Run the job service for a stage (teacher or retrieve): lease its shards to `dgr worker`
    /// processes, reassign those of dead workers, assemble the result when all are done.
    Coordinator(distributed::CoordinatorArgs),
    /// Work for a coordinator: lease shards, compute them, report them, until the job is done.
    Worker(distributed::WorkerArgs),
    /// Show the job's stages (as `dgr run` recorded them), or a running coordinator's progress:
    /// shards done / leased / pending, workers, ETA; training ranks, steps, step times.
    Status(distributed::StatusArgs),
    /// Run the whole job: prepare, BM25, FM-index, stage 1, retrieval, teacher, stage 2,
    /// retrieval with the distilled student, evaluation; finished stages are reused.
    Run(pipeline::Args),
}

pub fn run(command: Command, config_file: Option<&Path>) -> anyhow::Result<()> {
    match command {
        Command::Prepare(args) => prepare::run(&load_config(config_file, args.overrides())?, &args),
        Command::Bm25(cmd) => bm25::run(&load_config(config_file, cmd.overrides())?, &cmd),
        Command::Index(cmd) => index::run(&load_config(config_file, Figment::new())?, &cmd),
        Command::Eval(args) => eval::run(&load_config(config_file, Figment::new())?, &args),
        Command::TrainGen(args) => train_gen::run(&load_config(config_file, args.overrides())?, &args),
        Command::TrainDistill(args) => train_distill::run(&load_config(config_file, args.overrides())?, &args),
        Command::Retrieve(args) => retrieve::run(&load_config(config_file, args.overrides())?, &args),
        Command::Teacher(cmd) => teacher::run(&load_config(config_file, cmd.overrides())?, &cmd),
        Command::Coordinator(args) => distributed::coordinator(&load_config(config_file, args.overrides())?, &args),
        Command::Worker(args) => distributed::worker(&load_config(config_file, Figment::new())?, &args),
        Command::Status(args) => distributed::status(&load_config(config_file, Figment::new())?, &args),
        Command::Run(args) => pipeline::run(&load_config(config_file, Figment::new())?, config_file, &args),
    }
}

fn load_config(file: Option<&Path>, overrides: Figment) -> anyhow::Result<Config> {
    Ok(dgr_pipeline::config::load(file, overrides)?)
}

/// A training command's place in a data-parallel job.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RankArgs {
    /// The training coordinator (`dgr coordinator --role train`), e.g. http://node0:7878.
    /// Without it the command trains alone.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// This node's index in the job (ranks are numbered by node, then local rank).
    #[arg(long, default_value_t = 0)]
    pub node_rank: u32,
    /// This process's index on its node.
    #[arg(long, default_value_t = 0)]
    pub local_rank: u32,
    /// Address the other ranks reach this one at (default: this machine's address on the
    /// route to the coordinator).
    #[arg(long)]
    pub host: Option<String>,
}

impl RankArgs {
    fn place(&self) -> RankPlace {
        RankPlace {
            coordinator: self.coordinator.clone(),
            node_rank: self.node_rank,
            local_rank: self.local_rank,
            host: self.host.clone(),
        }
    }
}
