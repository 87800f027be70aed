//! Ring all-reduce over TCP for CPU ranks.
//!
//! Rank `r` sends to rank `r + 1` and receives from rank `r - 1` (modulo the world size), one
//! connection each way. An all-reduce is a reduce-scatter followed by an all-gather, each
//! `world - 1` steps: the buffer is cut into `world` chunks, and at step `s` rank `r` passes
//! chunk `r - s` on and receives chunk `r - s - 1`, adding it to its own during the
//! reduce-scatter and copying it during the all-gather. Every rank sends and receives
//! `2 (world - 1) / world` of the buffer, whatever the world size.
//!
//! Chunks travel in segments, and a segment is passed on as soon as it is reduced, so the
//! steps overlap (a pipeline), while a sender thread writes and the caller's thread reads and
//! adds. Each chunk is summed in ring order starting from the rank after its owner, whatever
//! the timing, and its final value is copied to every rank: the result is the same bits on all
//! ranks and in every rerun.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::{Collective, CollectiveError, check_root};

/// How a ring is set up and run.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// A number every rank of one job shares (a fingerprint of the job and its settings); a
    /// connection that presents another one is refused.
    pub key: u64,
    /// How long set-up waits for the neighbours to connect.
    pub connect_timeout: Duration,
    /// Bytes per message of an all-reduce; smaller segments start the pipeline sooner, larger
    /// ones cost fewer system calls.
    pub segment_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig { key: 0, connect_timeout: Duration::from_secs(60), segment_bytes: 1 << 20 }
    }
}

/// The first bytes on every ring connection, and their version.
const MAGIC: &[u8; 8] = b"DGRRING1";
const ACCEPTED: u8 = 1;
const WRONG_KEY: u8 = 2;
const WRONG_RANK: u8 = 3;
/// Segments an all-reduce may have queued for sending ahead of the wire.
const SEND_AHEAD: usize = 4;

/// One rank's place in a ring of TCP connections.
pub struct TcpRing {
    rank: usize,
    world: usize,
    /// `(to the next rank, from the previous rank)`; none in a world of one.
    links: Option<(TcpStream, TcpStream)>,
    segment: usize,
}

/// Breaks a ring's connections from another thread, so that a rank blocked in a collective
/// returns with an error (used when the job is told to stop while a peer hangs).
#[derive(Debug)]
pub struct RingAborter {
    streams: Vec<TcpStream>,
}

impl RingAborter {
    pub fn abort(&self) {
        for stream in &self.streams {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl TcpRing {
    /// Joins the ring of `peers` (every rank's listening address, in rank order) as `rank`,
    /// accepting on `listener` (the address given for this rank). Connects to the next rank,
    /// accepts the previous one, and checks both present the same key and the right ranks.
    pub fn connect(
        rank: usize,
        listener: TcpListener,
        peers: &[SocketAddr],
        config: &RingConfig,
    ) -> Result<TcpRing, CollectiveError> {
        let world = peers.len();
        if rank >= world {
            return Err(CollectiveError::Setup(format!("rank {rank} in a world of {world}")));
        }
        let segment = (config.segment_bytes / 4).max(1);
        if world == 1 {
            return Ok(TcpRing { rank, world, links: None, segment });
        }
        let deadline = Instant::now() + config.connect_timeout;
        let (next_rank, prev_rank) = ((rank + 1) % world, (rank + world - 1) % world);
        let hello = hello(rank, world, config.key);

        let mut next = connect_until(peers[next_rank], next_rank, deadline)?;
        next.write_all(&hello).map_err(peer_error(next_rank, "cannot greet"))?;
        let prev = accept_from(&listener, prev_rank, world, config.key, deadline)?;
        let mut answer = [0u8];
        next.set_read_timeout(Some(remaining(deadline))).map_err(peer_error(next_rank, "cannot set a timeout"))?;
        next.read_exact(&mut answer).map_err(peer_error(next_rank, "no answer to the greeting"))?;
        match answer[0] {
            ACCEPTED => {}
            WRONG_KEY => {
                return Err(CollectiveError::Setup(format!(
                    "rank {next_rank} refused the connection: it belongs to another job or runs other settings"
                )));
            }
            other => {
                return Err(CollectiveError::Setup(format!("rank {next_rank} refused the connection (code {other})")));
            }
        }
        next.set_read_timeout(None).map_err(peer_error(next_rank, "cannot clear the timeout"))?;
        for (stream, peer) in [(&next, next_rank), (&prev, prev_rank)] {
            stream.set_nodelay(true).map_err(peer_error(peer, "cannot set TCP_NODELAY"))?;
        }
        debug!(rank, world, "ring connected");
        Ok(TcpRing { rank, world, links: Some((next, prev)), segment })
    }

    /// A handle that breaks this ring's connections from another thread.
    pub fn aborter(&self) -> Result<RingAborter, CollectiveError> {
        let mut streams = Vec::new();
        if let Some((next, prev)) = &self.links {
            let (next_rank, prev_rank) = self.neighbours();
            streams.push(next.try_clone().map_err(peer_error(next_rank, "cannot clone the connection"))?);
            streams.push(prev.try_clone().map_err(peer_error(prev_rank, "cannot clone the connection"))?);
        }
        Ok(RingAborter { streams })
    }

    fn neighbours(&self) -> (usize, usize) {
        ((self.rank + 1) % self.world, (self.rank + self.world - 1) % self.world)
    }
}

impl Collective for TcpRing {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), CollectiveError> {
        let (rank, world, segment) = (self.rank, self.world, self.segment);
        let (next_rank, prev_rank) = self.neighbours();
        let Some((next, prev)) = &mut self.links else { return Ok(()) };
        let length = buffer.len();
        let chunk = |c: usize| (c * length / world)..((c + 1) * length / world);
        let steps = 2 * (world - 1);

        let (to_sender, outgoing) = sync_channel::<Vec<f32>>(SEND_AHEAD);
        let (give_back, returned) = sync_channel::<Vec<f32>>(SEND_AHEAD + 1);
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || send_all(next, outgoing, give_back));
            let received = (|| {
                let queue = |values: &[f32]| -> Result<(), ()> {
                    let mut message = returned.try_recv().unwrap_or_default();
                    message.clear();
                    message.extend_from_slice(values);
                    to_sender.send(message).map_err(|_| ())
                };
                let mut incoming = vec![0f32; segment];
                for part in segments(chunk(rank), segment) {
                    if queue(&buffer[part]).is_err() {
                        return Ok(());
                    }
                }
                for step in 0..steps {
                    let owner = (rank + 2 * world - step - 1) % world;
                    for part in segments(chunk(owner), segment) {
                        let values = &mut incoming[..part.len()];
                        read_values(prev, values).map_err(|e| read_error(prev_rank, e))?;
                        let target = &mut buffer[part];
                        if step < world - 1 {
                            target.iter_mut().zip(values.iter()).for_each(|(t, v)| *t += v);
                        } else {
                            target.copy_from_slice(values);
                        }
                        if step + 1 < steps && queue(target).is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            })();
            drop(to_sender);
            let sent = sender.join().unwrap_or_else(|_| Err(std::io::Error::other("the sender thread panicked")));
            // A failed write ends the sender first; report it over the read that then fails.
            sent.map_err(|e| write_error(next_rank, e))?;
            received
        })
    }

    fn broadcast(&mut self, bytes: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.world)?;
        let rank = self.rank;
        let (next_rank, prev_rank) = self.neighbours();
        let Some((next, prev)) = &mut self.links else { return Ok(()) };
        // Store and forward along the ring; the rank before the root forwards nothing, so no
        // write ever waits on a cycle.
        if rank != root {
            prev.read_exact(bytes).map_err(|e| read_error(prev_rank, e))?;
        }
        if next_rank != root {
            next.write_all(bytes).map_err(|e| write_error(next_rank, e))?;
        }
        Ok(())
    }
}

/// The segments a chunk travels in.
fn segments(chunk: Range<usize>, segment: usize) -> impl Iterator<Item = Range<usize>> {
    let end = chunk.end;
    chunk.step_by(segment).map(move |start| start..(start + segment).min(end))
}

fn send_all(
    next: &mut TcpStream,
    outgoing: Receiver<Vec<f32>>,
    give_back: SyncSender<Vec<f32>>,
) -> std::io::Result<()> {
    for message in outgoing {
        next.write_all(bytemuck::cast_slice(&message))?;
        let _ = give_back.try_send(message);
    }
    Ok(())
}

fn read_values(prev: &mut TcpStream, values: &mut [f32]) -> std::io::Result<()> {
    prev.read_exact(bytemuck::cast_slice_mut(values))
}

fn read_error(peer: usize, error: std::io::Error) -> CollectiveError {
    match error.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            CollectiveError::Closed { peer }
        }
        _ => CollectiveError::Peer { peer, action: "cannot receive", source: error },
    }
}

fn write_error(peer: usize, error: std::io::Error) -> CollectiveError {
    match error.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            CollectiveError::Closed { peer }
        }
        _ => CollectiveError::Peer { peer, action: "cannot send", source: error },
    }
}

fn peer_error(peer: usize, action: &'static str) -> impl FnOnce(std::io::Error) -> CollectiveError {
    move |source| CollectiveError::Peer { peer, action, source }
}

fn hello(rank: usize, world: usize, key: u64) -> [u8; 24] {
    let mut hello = [0u8; 24];
    hello[..8].copy_from_slice(MAGIC);
    hello[8..12].copy_from_slice(&(rank as u32).to_le_bytes());
    hello[12..16].copy_from_slice(&(world as u32).to_le_bytes());
    hello[16..].copy_from_slice(&key.to_le_bytes());
    hello
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
}

/// Connects to `address`, retrying while the peer is not listening yet.
fn connect_until(address: SocketAddr, peer: usize, deadline: Instant) -> Result<TcpStream, CollectiveError> {
    loop {
        match TcpStream::connect_timeout(&address, remaining(deadline).min(Duration::from_secs(1))) {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() >= deadline => {
                return Err(CollectiveError::Peer { peer, action: "cannot connect", source: error });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Accepts connections until one greets as `prev_rank` of this world with this key; others are
/// answered with the reason and dropped.
fn accept_from(
    listener: &TcpListener,
    prev_rank: usize,
    world: usize,
    key: u64,
    deadline: Instant,
) -> Result<TcpStream, CollectiveError> {
    let expected = hello(prev_rank, world, key);
    listener.set_nonblocking(true).map_err(peer_error(prev_rank, "cannot poll the listener"))?;
    loop {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let mut greeting = [0u8; 24];
                let read = stream
                    .set_nonblocking(false)
                    .and_then(|_| stream.set_read_timeout(Some(remaining(deadline))))
                    .and_then(|_| stream.read_exact(&mut greeting));
                if read.is_err() || greeting[..8] != MAGIC[..] {
                    warn!(%from, "a connection to the ring port that is not a dgr rank; dropped");
                    continue;
                }
                let answer = if greeting == expected {
                    ACCEPTED
                } else if greeting[16..] != expected[16..] {
                    WRONG_KEY
                } else {
                    WRONG_RANK
                };
                let _ = stream.write_all(&[answer]);
                if answer == ACCEPTED {
                    stream.set_read_timeout(None).map_err(peer_error(prev_rank, "cannot clear the timeout"))?;
                    return Ok(stream);
                }
                warn!(%from, answer, "refused a ring connection (another job, other settings, or the wrong rank)");
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(CollectiveError::Setup(format!(
                        "rank {prev_rank} did not connect within the set-up timeout"
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => {
                return Err(CollectiveError::Peer { peer: prev_rank, action: "cannot accept", source: error });
            }
        }
    }
}
