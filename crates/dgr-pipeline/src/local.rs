//! The processes `dgr run` starts on this machine: a coordinator and `run.workers` workers for
//! a shard stage (retrieve, teacher), a training coordinator and `ranks.world_size` ranks for a
//! training stage. They are this program again, with the same configuration file and
//! environment, so they resolve the same settings; each logs to `<job.dir>/logs/`. They die
//! with this process (a parent killed outright leaves nothing running) and a stop request
//! (SIGINT, SIGTERM) is passed on to them, so training ranks checkpoint the same step. While
//! they run, their coordinator is asked how far they are, for the progress bar and the log.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dgr_coordinator::client::Client;
use dgr_core::progress::{Progress, Unit};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Context, Result, bail};
use crate::ranks::{EXIT_ABORTED, EXIT_STOPPED, Ending};
use crate::retrieve::Student;
use crate::services::{ShardStage, TrainStage};

/// How to start more of this program.
#[derive(Debug, Clone)]
pub struct Program {
    /// The `dgr` executable.
    pub path: PathBuf,
    /// The `--config` file this run was given, passed on to every child.
    pub config_file: Option<PathBuf>,
}

/// Starts and watches the children of one stage at a time.
pub struct Launcher {
    program: Program,
    log_dir: PathBuf,
    token: String,
    /// Set when this process is asked to stop; children are then told to stop too.
    stop: Arc<AtomicBool>,
    /// Set while children run (the signal watcher's cue).
    running: Arc<AtomicBool>,
}

/// A started child and its name in logs.
struct Process {
    name: String,
    child: Child,
}

impl Launcher {
    pub fn new(program: Program, config: &Config) -> Result<Self> {
        let log_dir = config.job.dir.join("logs");
        std::fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        // The children's shared secret: the configured one, else DGR_TOKEN, else a new one.
        let token = match crate::services::token(config) {
            Ok(token) => token,
            Err(_) => dgr_core::import::sha256_hex(
                format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
            )[..32]
                .to_string(),
        };
        let running = Arc::new(AtomicBool::new(false));
        let stop = stop_on_signals(running.clone())?;
        Ok(Launcher { program, log_dir, token, stop, running })
    }

    /// Runs a shard stage on a coordinator and `workers` workers; `overwrite` starts its job
    /// over, else an interrupted one continues from its ledger.
    pub fn shard_stage(
        &self,
        stage: &ShardStage,
        workers: usize,
        overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (url, bind) = local_address()?;
        let mut shared = vec!["--role".to_string(), stage.name().to_string(), "--split".into(), stage.split().into()];
        if let ShardStage::Retrieve(task) = stage {
            if task.student == Student::Stage2 {
                shared.extend(["--student".into(), "dgr".into()]);
            }
            if let Some(limit) = task.limit {
                shared.extend(["--limit".into(), limit.to_string()]);
            }
        }
        let label = stage.label();
        let mut coordinator_args = vec!["coordinator".to_string(), "--bind".into(), bind];
        coordinator_args.extend(shared.iter().cloned());
        if overwrite {
            coordinator_args.push("--overwrite".into());
        }
        let mut processes = vec![self.spawn(&format!("{label}-coordinator"), &coordinator_args, None)?];
        let threads = threads_each(workers);
        for i in 0..workers {
            let name = format!("{label}-worker-{i}");
            let mut args =
                vec!["worker".to_string(), "--coordinator".into(), url.clone(), "--name".into(), name.clone()];
            args.extend(shared.iter().cloned());
            processes.push(self.spawn(&name, &args, Some(threads))?);
        }
        info!(stage = %label, workers, %url, logs = %self.log_dir.display(), "coordinator and workers started");
        let mut watch = Watch::new(&url, &self.token, &label, Watched::Shards, progress)?;
        let statuses = self.wait_all(processes, &mut watch)?;
        // The coordinator's exit says whether the set is complete; workers that lost a race
        // to the end may report an error after it.
        match statuses.first() {
            Some((_, status)) if status.success() => Ok(()),
            Some((name, status)) => bail!("{name} {}; see {}", describe(status), self.log(name).display()),
            None => bail!("the coordinator of {label} did not start"),
        }
    }

    /// Runs a training stage as `world` ranks under a training coordinator.
    /// `fresh` starts it over (the ranks' first removes the stage's checkpoints), else it
    /// resumes from the newest.
    /// `steps` is the stage's length, for the progress shown.
    pub fn training(
        &self,
        stage: TrainStage,
        world: usize,
        fresh: bool,
        steps: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (url, bind) = local_address()?;
        let name = stage.name();
        let coordinator = vec![
            "coordinator".to_string(),
            "--role".into(),
            "train".into(),
            "--stage".into(),
            name.into(),
            "--bind".into(),
            bind,
        ];
        let mut processes = vec![self.spawn(&format!("{name}-coordinator"), &coordinator, None)?];
        let threads = threads_each(world);
        for local_rank in 0..world {
            let mut args = vec![
                name.to_string(),
                "--coordinator".into(),
                url.clone(),
                "--local-rank".into(),
                local_rank.to_string(),
                "--host".into(),
                "127.0.0.1".into(),
            ];
            if fresh {
                args.push("--fresh".into());
            }
            processes.push(self.spawn(&format!("{name}-rank-{local_rank}"), &args, Some(threads))?);
        }
        info!(stage = name, ranks = world, %url, logs = %self.log_dir.display(), "training coordinator and ranks started");
        let mut watch = Watch::new(&url, &self.token, name, Watched::Steps(steps), progress)?;
        let statuses = self.wait_all(processes, &mut watch)?;
        let code = |status: &ExitStatus| status.code().and_then(|c| u8::try_from(c).ok());
        if statuses.iter().all(|(_, s)| s.success()) {
            return Ok(());
        }
        if statuses.iter().any(|(_, s)| code(s) == Some(EXIT_STOPPED)) {
            return Err(Ending::Stopped { step: None }.into());
        }
        let failed: Vec<String> = statuses
            .iter()
            .filter(|(_, s)| !s.success() && code(s) != Some(EXIT_ABORTED))
            .map(|(name, s)| format!("{name} {} (log: {})", describe(s), self.log(name).display()))
            .collect();
        let reason = if failed.is_empty() { "every rank was aborted".to_string() } else { failed.join("; ") };
        Err(Ending::Aborted { reason }.into())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Starts `dgr [--config FILE] ARGS` as `name`, with `threads` compute threads.
    fn spawn(&self, name: &str, args: &[String], threads: Option<usize>) -> Result<Process> {
        let log_path = self.log(name);
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(&self.program.path);
        if let Some(file) = &self.program.config_file {
            command.arg("--config").arg(file);
        }
        command.args(args).env("DGR_TOKEN", &self.token).env("NO_COLOR", "1").stdin(Stdio::null());
        command.stdout(log.try_clone()?).stderr(log);
        if let Some(threads) = threads {
            command.env("RAYON_NUM_THREADS", threads.to_string());
        }
        // SAFETY: the closure runs in the child between fork and exec and only makes two
        // async-signal-safe system calls.
        unsafe {
            command.pre_exec(|| {
                // Its own process group: a Ctrl-C at the terminal reaches this process, which
                // passes the stop on, rather than killing the children mid-step.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Killed with this process, whatever ends it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", self.program.path.display()))?;
        Ok(Process { name: name.to_string(), child })
    }

    /// Waits for every process (the first is the coordinator). A stop request is passed on
    /// to every process still running, once; when every other process has ended and one of
    /// them failed, the coordinator (which would wait for workers forever) is stopped too, and
    /// when the coordinator has finished, so are the others. Statuses in start order.
    fn wait_all(&self, mut processes: Vec<Process>, watch: &mut Watch) -> Result<Vec<(String, ExitStatus)>> {
        self.running.store(true, Ordering::SeqCst);
        let waited = self.wait_each(&mut processes, watch);
        self.running.store(false, Ordering::SeqCst);
        watch.finish();
        let statuses = waited?;
        if self.stop.load(Ordering::SeqCst) {
            return Err(Ending::Stopped { step: None }.into());
        }
        Ok(processes.into_iter().zip(statuses).map(|(p, s)| (p.name, s)).collect())
    }

    fn wait_each(&self, processes: &mut [Process], watch: &mut Watch) -> Result<Vec<ExitStatus>> {
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; processes.len()];
        let mut signalled = vec![false; processes.len()];
        loop {
            for (process, status) in processes.iter_mut().zip(statuses.iter_mut()) {
                if status.is_none() {
                    *status = process.child.try_wait()?;
                }
            }
            if statuses.iter().all(Option::is_some) {
                break;
            }
            let others = &statuses[1..];
            let orphaned = others.iter().all(Option::is_some) && others.iter().flatten().any(|s| !s.success());
            // A coordinator that finished its job leaves nothing to do for those still
            // starting or waiting for work.
            let finished = statuses[0].is_some_and(|s| s.success());
            let stop = self.stop.load(Ordering::SeqCst);
            for (i, process) in processes.iter().enumerate() {
                if statuses[i].is_none() && !signalled[i] && (stop || finished || (i == 0 && orphaned)) {
                    if finished {
                        info!(process = %process.name, "the coordinator is done: stopping it");
                    } else {
                        warn!(process = %process.name, "stopping it");
                    }
                    // SAFETY: kill(2) on a child this process started and has not reaped.
                    unsafe { libc::kill(process.child.id() as libc::pid_t, libc::SIGTERM) };
                    signalled[i] = true;
                }
            }
            watch.poll();
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(statuses.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// What a stage's coordinator is asked about.
enum Watched {
    /// Shards done of all.
    Shards,
    /// The step every rank has finished, of the stage's steps.
    Steps(u64),
}

/// A stage running in other processes, followed through its coordinator: every 2 s for the
/// progress bar, every 30 s in the log (what a job without a terminal shows). A coordinator
/// that does not answer yet, or no more, is simply asked again later.
struct Watch<'p> {
    client: Client,
    runtime: tokio::runtime::Runtime,
    label: String,
    watched: Watched,
    progress: &'p dyn Progress,
    /// The position shown so far, once the bar has begun.
    shown: Option<u64>,
    next_poll: Instant,
    next_log: Instant,
}

const POLL_EVERY: Duration = Duration::from_secs(2);
const LOG_EVERY: Duration = Duration::from_secs(30);

impl<'p> Watch<'p> {
    fn new(url: &str, token: &str, label: &str, watched: Watched, progress: &'p dyn Progress) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let now = Instant::now();
        Ok(Watch {
            client: Client::new(url, token, Duration::ZERO)?,
            runtime,
            label: label.to_string(),
            watched,
            progress,
            shown: None,
            next_poll: now + POLL_EVERY,
            next_log: now + LOG_EVERY,
        })
    }

    /// Asks the coordinator, when it is time to, and moves the bar.
    fn poll(&mut self) {
        let now = Instant::now();
        if now < self.next_poll {
            return;
        }
        self.next_poll = now + POLL_EVERY;
        let Some((done, total)) = self.ask() else { return };
        let shown = match self.shown {
            Some(shown) => shown,
            None => {
                self.progress.begin(&self.label, total, Unit::Items);
                0
            }
        };
        if done > shown {
            self.progress.advance(done - shown);
        }
        self.shown = Some(done.max(shown));
        if now >= self.next_log {
            self.next_log = now + LOG_EVERY;
            let unit = match self.watched {
                Watched::Shards => "shards",
                Watched::Steps(_) => "steps",
            };
            info!(stage = %self.label, done, total, "{}: {done} of {total} {unit}", self.label);
        }
    }

    /// (done, total), if the coordinator answered within a second.
    fn ask(&self) -> Option<(u64, u64)> {
        let limit = Duration::from_secs(1);
        let client = &self.client;
        match self.watched {
            Watched::Shards => {
                let asked = self.runtime.block_on(async { tokio::time::timeout(limit, client.status()).await });
                let status = asked.ok()?.ok()?;
                Some((status.done, status.shards))
            }
            Watched::Steps(steps) => {
                let asked = self.runtime.block_on(async { tokio::time::timeout(limit, client.train_status()).await });
                let status = asked.ok()?.ok()?;
                let step = status.ranks.iter().filter(|r| r.rank.is_some()).map(|r| r.step).min()?;
                Some((step, steps))
            }
        }
    }

    fn finish(&mut self) {
        if self.shown.take().is_some() {
            self.progress.finish();
        }
    }
}

/// A flag set by SIGINT or SIGTERM while children run, so that they are stopped in order;
/// with no child running, the signal ends this process at once, as it would by default.
pub fn stop_on_signals(children_running: Arc<AtomicBool>) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                if !children_running.load(Ordering::SeqCst) || flag.swap(true, Ordering::SeqCst) {
                    warn!("{name}: exiting now; rerun the same command to continue");
                    std::process::exit(130);
                }
                warn!("{name}: stopping the stage's processes (training ranks checkpoint first); a second signal exits at once");
            }
        })
    });
    Ok(stop)
}

/// A free port on the loopback address: the coordinator's URL and listening address.
fn local_address() -> Result<(String, String)> {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
    Ok((format!("http://127.0.0.1:{port}"), format!("127.0.0.1:{port}")))
}

/// The machine's cores split between `processes`.
fn threads_each(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / processes.max(1)).max(1)
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}
