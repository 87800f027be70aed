//! A training process as one rank of a data-parallel job: it joins the training coordinator,
//! connects the TCP ring to its neighbours, measures the ring once (preflight), reports its
//! step and phase by heartbeats, and leaves with its outcome. SIGTERM or SIGUSR1 (to this rank,
//! or to the coordinator) ends every rank after the same step with a checkpoint of it; an abort
//! from the coordinator (another rank died or hangs) breaks the ring so that no rank waits on a
//! collective that cannot end. Without `--coordinator` the command trains alone, with the same
//! signal handling.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail};
use dgr_collective::{Collective, CollectiveError, RingAborter, RingConfig, Solo, TcpRing};
use dgr_coordinator::api::{JoinRequest, LeaveRequest, Outcome, Phase, RankHeartbeat, RankInstruction, WorldResponse};
use dgr_coordinator::client::Client;
use dgr_model::device::DeviceKind;
use dgr_trainer::engine::{StepLog, TrainError, Trained};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::Config;

/// Exit code of a run stopped on request after writing its checkpoint: rerun to resume.
pub const EXIT_STOPPED: u8 = 75;
/// Exit code of a rank whose job failed elsewhere (another rank died or hangs): relaunch the
/// job to resume from its last checkpoint.
pub const EXIT_ABORTED: u8 = 69;

/// Where a training process stands in its job.
#[derive(Clone, Debug, Default)]
pub struct RankPlace {
    /// The training coordinator (`dgr coordinator --role train`), e.g. http://node0:7878.
    /// Without it the process trains alone.
    pub coordinator: Option<String>,
    /// This node's index in the job (ranks are numbered by node, then local rank).
    pub node_rank: u32,
    /// This process's index on its node.
    pub local_rank: u32,
    /// Address the other ranks reach this one at (default: this machine's address on the
    /// route to the coordinator).
    pub host: Option<String>,
}

/// How a run ended when it did not finish: the exit code says what to do next.
#[derive(Debug)]
pub enum Ending {
    /// The step every rank stopped after (unknown to the coordinator).
    Stopped {
        step: Option<u64>,
    },
    Aborted {
        reason: String,
    },
}

impl Ending {
    pub fn exit_code(&self) -> u8 {
        match self {
            Ending::Stopped { .. } => EXIT_STOPPED,
            Ending::Aborted { .. } => EXIT_ABORTED,
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Stopped { step: Some(step) } => {
                write!(f, "stopped as asked after step {step}, with its checkpoint: rerun the same command to resume")
            }
            Ending::Stopped { step: None } => {
                write!(f, "stopped as asked: every rank checkpointed the same step; relaunch the job to resume")
            }
            Ending::Aborted { reason } => {
                write!(f, "the job failed: {reason}; relaunch it to resume from its last checkpoint")
            }
        }
    }
}

impl std::error::Error for Ending {}

/// What the rank is doing, shared with the heartbeat thread.
#[derive(Default)]
struct Progress {
    step: AtomicU64,
    phase: AtomicU8,
    /// f64 bits; 0 = none yet.
    step_seconds: AtomicU64,
    all_reduce_seconds: AtomicU64,
    bytes_per_second: AtomicU64,
    /// f64 bits of the last step's loss (none before the first step).
    loss: AtomicU64,
}

const PHASES: [Phase; 4] = [Phase::Starting, Phase::Compute, Phase::Collective, Phase::Other];

impl Progress {
    fn set_phase(&self, phase: Phase) {
        let index = PHASES.iter().position(|&p| p == phase).unwrap_or(0);
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    fn heartbeat(&self, member_id: u64) -> RankHeartbeat {
        let seconds = |value: &AtomicU64| Some(f64::from_bits(value.load(Ordering::Relaxed))).filter(|&s| s > 0.0);
        RankHeartbeat {
            member_id,
            step: self.step.load(Ordering::Relaxed),
            phase: PHASES[usize::from(self.phase.load(Ordering::Relaxed)).min(3)],
            step_seconds: seconds(&self.step_seconds),
            all_reduce_seconds: seconds(&self.all_reduce_seconds),
            all_reduce_bytes_per_second: seconds(&self.bytes_per_second),
            loss: (self.step.load(Ordering::Relaxed) > 0).then(|| f64::from_bits(self.loss.load(Ordering::Relaxed))),
        }
    }
}

/// The collective, marking the rank's phase around each operation for the heartbeats.
struct Watched {
    inner: Box<dyn Collective + Send>,
    progress: Arc<Progress>,
}

impl Watched {
    fn around<T>(&mut self, f: impl FnOnce(&mut dyn Collective) -> T) -> T {
        self.progress.set_phase(Phase::Collective);
        let result = f(self.inner.as_mut());
        self.progress.set_phase(Phase::Compute);
        result
    }
}

impl Collective for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn world_size(&self) -> usize {
        self.inner.world_size()
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), CollectiveError> {
        self.around(|c| c.all_reduce_sum(buffer))
    }

    fn broadcast(&mut self, bytes: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.around(|c| c.broadcast(bytes, root))
    }
}

/// This process's place in the job, and the thread that watches over it.
pub struct Rank {
    pub rank: usize,
    /// Set by a signal or the coordinator: stop after the current step.
    pub stop: Arc<AtomicBool>,
    collective: Option<Box<dyn Collective + Send>>,
    progress: Arc<Progress>,
    /// Why the coordinator told this rank to abort, if it did.
    aborted: Arc<Mutex<Option<String>>>,
    membership: Option<(Client, u64)>,
    watcher: Option<(std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// The fingerprint ranks of one job must share: the stage, its resolved settings, the world
/// size and the program itself.
pub fn fingerprint(config: &Config, stage: &str) -> Result<String> {
    let settings = match stage {
        "train-gen" => serde_json::to_value(&config.train_gen)?,
        "train-distill" => serde_json::to_value(&config.train_distill)?,
        other => bail!("`{other}` is not a training stage (train-gen, train-distill)"),
    };
    let program = std::env::current_exe().context("cannot find this program's file")?;
    let (_, binary) = dgr_core::import::sha256_file(&program)
        .with_context(|| format!("cannot read {} to fingerprint it", program.display()))?;
    let text = serde_json::json!({
        "stage": stage,
        "settings": settings,
        "world_size": config.ranks.world_size,
        "device": config.device.kind,
        "program": binary,
    });
    Ok(dgr_core::import::sha256_hex(text.to_string().as_bytes()))
}

impl Rank {
    /// Joins the job as `args` say (or trains alone), with the signal handlers installed.
    pub fn join(config: &Config, args: &RankPlace, stage: &str) -> Result<Rank> {
        let runtime = Arc::new(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let aborted = Arc::new(Mutex::new(None));
        let Some(url) = &args.coordinator else {
            if config.ranks.world_size != 1 {
                bail!(
                    "ranks.world_size is {} but no --coordinator was given: ranks of a job find each other through `dgr coordinator --role train`",
                    config.ranks.world_size
                );
            }
            let mut rank = Rank {
                rank: 0,
                stop,
                collective: Some(Box::new(Solo)),
                progress,
                aborted,
                membership: None,
                watcher: None,
                runtime,
            };
            rank.start_watcher(Aborter { ring: None, exit: false }, Duration::from_secs(1))?;
            return Ok(rank);
        };

        let token = crate::services::token(config)?;
        let client = Client::new(url, &token, Duration::from_secs_f64(config.worker.retry_seconds))?;
        let host = match &args.host {
            Some(host) => host.clone(),
            None => route_to(url)?,
        };
        let listener = TcpListener::bind((host.as_str(), 0)).with_context(|| format!("cannot listen on {host}"))?;
        let ring_address = listener.local_addr()?.to_string();
        let name = format!("{}:{}", hostname(), std::process::id());
        let request = JoinRequest {
            name: name.clone(),
            node: args.node_rank,
            local_rank: args.local_rank,
            ring_address: ring_address.clone(),
            world_size: config.ranks.world_size,
            fingerprint: fingerprint(config, stage)?,
        };
        let joined = runtime.block_on(client.train_join(&request)).context("the coordinator refused this rank")?;
        let member_id = joined.member_id;
        info!(%url, %ring_address, node = args.node_rank, local_rank = args.local_rank, "joined; waiting for every rank");
        let timeout = Duration::from_secs_f64(config.ranks.join_timeout_seconds);
        let started = Instant::now();
        let (rank, peers, key) = loop {
            match runtime.block_on(client.train_world(member_id))? {
                WorldResponse::Ready { rank, peers, key, .. } => break (rank, peers, key),
                WorldResponse::Wait { .. } if started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                WorldResponse::Wait { joined, world_size } => {
                    bail!("only {joined} of {world_size} ranks joined within {} s", timeout.as_secs())
                }
            }
        };
        let peers: Vec<SocketAddr> = peers
            .iter()
            .map(|p| p.parse().ok().with_context(|| format!("the coordinator sent a bad ring address `{p}`")))
            .collect::<Result<_>>()?;
        let ring_config = RingConfig { key, connect_timeout: timeout, ..RingConfig::default() };
        let mut ring = TcpRing::connect(rank, listener, &peers, &ring_config).context("cannot connect the ring")?;
        let aborter = ring.aborter()?;
        let bytes_per_second = preflight(&mut ring)?;
        progress.bytes_per_second.store(bytes_per_second.to_bits(), Ordering::Relaxed);
        info!(
            rank,
            world_size = peers.len(),
            all_reduce_mb_per_second = format!("{:.0}", bytes_per_second / 1e6),
            "ring connected: every rank reachable, same program and settings"
        );
        let on_gpu = config.device.kind == DeviceKind::Cuda;
        let collective = if on_gpu { nccl(ring, args.local_rank)? } else { Box::new(ring) };
        let mut this = Rank {
            rank,
            stop,
            collective: Some(collective),
            progress,
            aborted,
            membership: Some((client, member_id)),
            watcher: None,
            runtime,
        };
        // NCCL cannot be interrupted the way the ring can: on an abort the rank exits.
        let abort = Aborter { ring: Some(aborter), exit: on_gpu };
        this.start_watcher(abort, Duration::from_secs_f64(config.ranks.heartbeat_seconds))?;
        Ok(this)
    }

    /// The collective for the engine (once).
    pub fn collective(&mut self) -> Box<dyn Collective + Send> {
        let inner = self.collective.take().unwrap_or_else(|| Box::new(Solo));
        self.progress.set_phase(Phase::Compute);
        Box::new(Watched { inner, progress: self.progress.clone() })
    }

    /// Notes a finished step for the heartbeats.
    pub fn record(&self, step: &StepLog) {
        self.progress.step.store(step.step, Ordering::Relaxed);
        self.progress.step_seconds.store(step.seconds.to_bits(), Ordering::Relaxed);
        self.progress.loss.store(step.loss.to_bits(), Ordering::Relaxed);
        if let Some(seconds) = step.measures.get("all_reduce_seconds") {
            self.progress.all_reduce_seconds.store(seconds.to_bits(), Ordering::Relaxed);
        }
    }

    /// Runs `work` (a dev evaluation, say) as time the other ranks may wait for.
    pub fn outside_step<T>(&self, work: impl FnOnce() -> T) -> T {
        self.progress.set_phase(Phase::Other);
        let result = work();
        self.progress.set_phase(Phase::Compute);
        result
    }

    /// Leaves the job with the outcome of `result`, which becomes this command's.
    pub fn finish(mut self, result: Result<Trained, TrainError>) -> Result<Trained> {
        if let Some((handle, shutdown)) = self.watcher.take() {
            let _ = shutdown.send(());
            let _ = handle.join();
        }
        let aborted = self.aborted.lock().map(|a| a.clone()).unwrap_or_default();
        let (outcome, message, result): (Outcome, String, Result<Trained>) = match result {
            Ok(trained) => match trained.stopped_at {
                Some(step) => (
                    Outcome::Stopped,
                    format!("stopped after step {step}"),
                    Err(Ending::Stopped { step: Some(step) }.into()),
                ),
                None => (Outcome::Finished, "finished".into(), Ok(trained)),
            },
            Err(error) => {
                let reason = match (&aborted, &error) {
                    (Some(reason), _) => Some(format!("told to abort by the coordinator: {reason}")),
                    (None, TrainError::Collective(e)) => Some(e.to_string()),
                    _ => None,
                };
                match reason {
                    Some(reason) => (Outcome::Failed, reason.clone(), Err(Ending::Aborted { reason }.into())),
                    None => (Outcome::Failed, error.to_string(), Err(error.into())),
                }
            }
        };
        if let Some((client, member_id)) = &self.membership {
            let runtime = &self.runtime;
            let request = LeaveRequest { member_id: *member_id, outcome, message };
            let leave = async { tokio::time::timeout(Duration::from_secs(10), client.train_leave(&request)).await };
            if !matches!(runtime.block_on(leave), Ok(Ok(_))) {
                warn!("could not tell the coordinator this rank left");
            }
        }
        result
    }

    /// The thread that sends heartbeats, follows the coordinator's instructions and turns
    /// SIGTERM / SIGUSR1 into a stop after the current step (a second signal exits at once).
    fn start_watcher(&mut self, aborter: Aborter, every: Duration) -> Result<()> {
        let runtime = self.runtime.clone();
        let (mut terminate, mut user1) = runtime.block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::user_defined1())?))
        })?;
        let (shutdown, mut shut) = tokio::sync::oneshot::channel::<()>();
        let (stop, progress, aborted) = (self.stop.clone(), self.progress.clone(), self.aborted.clone());
        let membership = self.membership.clone();
        let handle = std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut told_to_stop = false;
                loop {
                    let signal = tokio::select! {
                        _ = &mut shut => return,
                        _ = terminate.recv() => Some("SIGTERM"),
                        _ = user1.recv() => Some("SIGUSR1"),
                        _ = tokio::time::sleep(every) => None,
                    };
                    if let Some(name) = signal {
                        if stop.swap(true, Ordering::SeqCst) {
                            warn!("{name} again: exiting now");
                            std::process::exit(i32::from(EXIT_STOPPED));
                        }
                        warn!("{name}: every rank finishes its current step, checkpoints it and exits (a second signal exits at once)");
                        continue;
                    }
                    let Some((client, member_id)) = &membership else { continue };
                    let heartbeat = progress.heartbeat(*member_id);
                    match tokio::time::timeout(Duration::from_secs(10), client.train_heartbeat(&heartbeat)).await {
                        Ok(Ok(RankInstruction::Continue)) => {}
                        Ok(Ok(RankInstruction::Stop { reason })) => {
                            if !told_to_stop {
                                warn!(%reason, "the coordinator asks every rank to stop after this step");
                                told_to_stop = true;
                            }
                            stop.store(true, Ordering::SeqCst);
                        }
                        Ok(Ok(RankInstruction::Abort { reason })) => {
                            warn!(%reason, "the coordinator aborts the job");
                            if let Ok(mut slot) = aborted.lock() {
                                slot.get_or_insert(reason);
                            }
                            if let Some(ring) = &aborter.ring {
                                ring.abort();
                            }
                            if aborter.exit {
                                warn!("a collective on the GPU cannot be interrupted: exiting");
                                std::process::exit(i32::from(EXIT_ABORTED));
                            }
                            return;
                        }
                        Ok(Err(error)) => warn!(%error, "heartbeat failed"),
                        Err(_) => warn!("heartbeat unanswered for 10 s"),
                    }
                }
            })
        });
        self.watcher = Some((handle, shutdown));
        Ok(())
    }
}

/// How the watcher ends a rank's collective when the coordinator aborts the job.
struct Aborter {
    /// Breaks the TCP ring, so that a rank waiting in it returns with an error.
    ring: Option<RingAborter>,
    /// Exit the process instead (NCCL waits on a dead peer until its own timeout).
    exit: bool,
}

/// NCCL between the ranks' GPUs (rank `r` on the GPU of its local rank), joined through the
/// ring: rank 0 makes the communicator's id and the ring hands it to the others. Gradients
/// reach NCCL through host memory ([`dgr_trainer::data_parallel`] flattens them there).
#[cfg(feature = "cuda")]
fn nccl(mut ring: TcpRing, local_rank: u32) -> Result<Box<dyn Collective + Send>> {
    use dgr_collective::nccl::{NcclCollective, unique_id};
    let (rank, world) = (ring.rank(), ring.world_size());
    let mut id = if rank == 0 { unique_id()? } else { [0; 128] };
    ring.broadcast(&mut id, 0)?;
    let device = local_rank as usize;
    let collective = NcclCollective::new(device, rank, world, &id)?;
    info!(rank, world, device, "joined the NCCL communicator");
    Ok(Box::new(collective))
}

#[cfg(not(feature = "cuda"))]
fn nccl(_ring: TcpRing, _local_rank: u32) -> Result<Box<dyn Collective + Send>> {
    bail!("device.kind = \"cuda\" needs dgr built with `--features cuda`")
}

/// Measures the ring with a 16 MiB all-reduce (after one to warm up): bytes per second of the
/// buffer, the figure `dgr status` shows.
fn preflight(ring: &mut TcpRing) -> Result<f64> {
    let mut buffer = vec![1.0f32; 4 << 20];
    ring.all_reduce_sum(&mut buffer)?;
    let started = Instant::now();
    ring.all_reduce_sum(&mut buffer)?;
    let expected = (ring.world_size() * ring.world_size()) as f32;
    if buffer.iter().any(|&v| v != expected) {
        bail!("the preflight all-reduce gave a wrong sum: the ring is broken");
    }
    Ok((buffer.len() * 4) as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// This machine's address on the route to the coordinator at `url` (no packet is sent).
fn route_to(url: &str) -> Result<String> {
    let authority = url.split("://").last().unwrap_or(url).split('/').next().unwrap_or_default();
    let target = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the coordinator address `{authority}`"))?
        .next()
        .with_context(|| format!("`{authority}` resolves to no address"))?;
    let probe = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip().to_string())
}

/// This machine's name (empty when it cannot be read).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
