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
//! steps overlap (a pipeline). One thread drives both connections without blocking, writing
//! straight from the buffer and reading into it, so neither direction waits on the other.
//! Each chunk is summed in ring order starting from the rank after its owner, whatever the
//! timing, and its final value is copied to every rank: the result is the same bits on all
//! ranks and in every rerun.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::os::fd::AsRawFd;
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
        let neighbours = self.neighbours();
        let Some((next, prev)) = &mut self.links else { return Ok(()) };
        let length = buffer.len();
        let chunk = |c: usize| (c * length / world)..((c + 1) * length / world);
        let steps = 2 * (world - 1);
        let owner = |step: usize| (rank + 2 * world - step - 1) % world;
        // Received in step order; what step s receives, step s + 1 sends on.
        let receives: Vec<(Range<usize>, Arrival)> = (0..steps)
            .flat_map(|step| {
                let arrival = if step < world - 1 { Arrival::Add } else { Arrival::Copy };
                segments(chunk(owner(step)), segment).map(move |part| (part, arrival))
            })
            .collect();
        // Sent: this rank's own chunk, then everything received except the last step's.
        let own: Vec<Range<usize>> = segments(chunk(rank), segment).collect();
        let forwarded = receives.len() - segments(chunk(owner(steps - 1)), segment).count();
        let sends: Vec<Range<usize>> =
            own.iter().cloned().chain(receives[..forwarded].iter().map(|(part, _)| part.clone())).collect();
        let plan = Plan { sends, ready: own.len(), receives };
        Pipe { next, prev, neighbours }.run(bytemuck::cast_slice_mut(buffer), &plan.in_bytes(), segment * 4)
    }

    fn broadcast(&mut self, bytes: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.world)?;
        let (rank, segment) = (self.rank, self.segment * 4);
        let neighbours = self.neighbours();
        let Some((next, prev)) = &mut self.links else { return Ok(()) };
        // Along the ring from the root, each segment passed on as soon as it is in; the rank
        // before the root passes nothing on.
        let all: Vec<Range<usize>> = segments(0..bytes.len(), segment).collect();
        let receives = if rank == root { Vec::new() } else { all.iter().map(|p| (p.clone(), Arrival::Copy)).collect() };
        let sends = if neighbours.0 == root { Vec::new() } else { all.clone() };
        let ready = if rank == root { sends.len() } else { 0 };
        Pipe { next, prev, neighbours }.run(bytes, &Plan { sends, ready, receives }, segment)
    }
}

/// What happens to a received segment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arrival {
    /// Added to the buffer's values (f32).
    Add,
    /// Replaces them.
    Copy,
}

/// One collective as two ordered lists of buffer ranges: what this rank sends, and what it
/// receives. Send `k` may go once `k < ready` or once receive `k - ready` is complete.
struct Plan {
    sends: Vec<Range<usize>>,
    ready: usize,
    receives: Vec<(Range<usize>, Arrival)>,
}

impl Plan {
    /// The same plan with element ranges of f32 turned into byte ranges.
    fn in_bytes(&self) -> Plan {
        let bytes = |r: &Range<usize>| r.start * 4..r.end * 4;
        Plan {
            sends: self.sends.iter().map(bytes).collect(),
            ready: self.ready,
            receives: self.receives.iter().map(|(r, a)| (bytes(r), *a)).collect(),
        }
    }
}

/// The two connections of a rank, driven by one thread: it writes to the next rank straight
/// from the buffer and reads from the previous one whenever either socket is ready, so neither
/// direction ever waits on the other (two ranks with full socket buffers would otherwise each
/// wait for the other to read), and no byte is copied in user space except to add.
struct Pipe<'a> {
    next: &'a mut TcpStream,
    prev: &'a mut TcpStream,
    /// `(next rank, previous rank)`.
    neighbours: (usize, usize),
}

impl Pipe<'_> {
    fn run(self, buffer: &mut [u8], plan: &Plan, segment_bytes: usize) -> Result<(), CollectiveError> {
        let (next_rank, prev_rank) = self.neighbours;
        let result = self.drive(buffer, plan, segment_bytes);
        // Leave the sockets blocking for set-up code and the aborter.
        let _ = self.next.set_nonblocking(false);
        let _ = self.prev.set_nonblocking(false);
        result.map_err(
            |(side, error)| {
                if side == Side::Send { write_error(next_rank, error) } else { read_error(prev_rank, error) }
            },
        )
    }

    fn drive(&self, buffer: &mut [u8], plan: &Plan, segment_bytes: usize) -> Result<(), (Side, std::io::Error)> {
        let (mut next, mut prev) = (&*self.next, &*self.prev);
        next.set_nonblocking(true).map_err(|e| (Side::Send, e))?;
        prev.set_nonblocking(true).map_err(|e| (Side::Receive, e))?;
        // Bytes of a segment to add arrive here first (as f32, so the sum reads them aligned).
        let mut incoming = vec![0f32; segment_bytes.div_ceil(4)];
        let (mut sent, mut sent_bytes) = (0usize, 0usize);
        let (mut received, mut received_bytes) = (0usize, 0usize);
        while sent < plan.sends.len() || received < plan.receives.len() {
            let can_send = sent < plan.sends.len() && (sent < plan.ready || sent - plan.ready < received);
            let can_receive = received < plan.receives.len();
            if !can_send && !can_receive {
                return Err((Side::Send, std::io::Error::other("a send waits for a receive that never comes")));
            }
            let (writable, readable) = wait_ready(next, can_send, prev, can_receive)?;
            if writable {
                let part = &plan.sends[sent];
                match next.write(&buffer[part.start + sent_bytes..part.end]) {
                    Ok(0) => return Err((Side::Send, ErrorKind::WriteZero.into())),
                    Ok(n) => sent_bytes += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err((Side::Send, e)),
                }
                if sent_bytes == part.len() {
                    (sent, sent_bytes) = (sent + 1, 0);
                }
            }
            if readable {
                let (part, arrival) = &plan.receives[received];
                let target = match arrival {
                    Arrival::Copy => &mut buffer[part.start + received_bytes..part.end],
                    Arrival::Add => &mut bytemuck::cast_slice_mut(&mut incoming)[received_bytes..part.len()],
                };
                match prev.read(target) {
                    Ok(0) => return Err((Side::Receive, ErrorKind::UnexpectedEof.into())),
                    Ok(n) => received_bytes += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err((Side::Receive, e)),
                }
                if received_bytes == part.len() {
                    if *arrival == Arrival::Add {
                        let values: &mut [f32] = bytemuck::cast_slice_mut(&mut buffer[part.clone()]);
                        values.iter_mut().zip(&incoming).for_each(|(value, add)| *value += add);
                    }
                    (received, received_bytes) = (received + 1, 0);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Send,
    Receive,
}

/// Blocks until the next rank's socket takes bytes (if `send`) or the previous one's has some
/// (if `receive`); returns which. A closed or broken socket counts as ready, so that the
/// following write or read reports it.
fn wait_ready(
    next: &TcpStream,
    send: bool,
    prev: &TcpStream,
    receive: bool,
) -> Result<(bool, bool), (Side, std::io::Error)> {
    let mut fds = [
        libc::pollfd { fd: next.as_raw_fd(), events: if send { libc::POLLOUT } else { 0 }, revents: 0 },
        libc::pollfd { fd: prev.as_raw_fd(), events: if receive { libc::POLLIN } else { 0 }, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready >= 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err((Side::Receive, error));
        }
    }
    let broken = libc::POLLERR | libc::POLLHUP;
    Ok((
        send && fds[0].revents & (libc::POLLOUT | broken) != 0,
        receive && fds[1].revents & (libc::POLLIN | broken) != 0,
    ))
}

/// The segments a chunk travels in.
fn segments(chunk: Range<usize>, segment: usize) -> impl Iterator<Item = Range<usize>> {
    let end = chunk.end;
    chunk.step_by(segment).map(move |start| start..(start + segment).min(end))
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
