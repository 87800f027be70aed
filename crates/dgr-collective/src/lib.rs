//! Collective operations between the ranks of a data-parallel training job: every rank hands in
//! a buffer of the same length and every rank gets back the same result.
//!
//! Two implementations: [`ring::TcpRing`] for CPU ranks (a ring over TCP, any mix of processes
//! and machines), and `nccl::NcclCollective` behind the `cuda` feature (NCCL through cudarc,
//! reducing device memory in place). [`Solo`] is the world of one rank, where every operation
//! is free.

pub mod ring;

#[cfg(feature = "cuda")]
pub mod nccl;

pub use ring::{RingAborter, RingConfig, TcpRing};

#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("rank {peer}: {action}: {source}")]
    Peer {
        peer: usize,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rank {peer} closed its connection (it exited, or the job is stopping)")]
    Closed { peer: usize },
    #[error("ring set-up: {0}")]
    Setup(String),
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("invalid collective call: {0}")]
    Usage(String),
}

impl CollectiveError {
    /// The rank whose connection failed, if the error is about one.
    pub fn peer(&self) -> Option<usize> {
        match self {
            CollectiveError::Peer { peer, .. } | CollectiveError::Closed { peer } => Some(*peer),
            _ => None,
        }
    }
}

/// What the ranks of a job do together. Every rank calls the same operations in the same order
/// with buffers of the same length; results are the same bits on every rank.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;

    /// Replaces `buffer` by its element-wise sum over all ranks. The order in which the terms
    /// are added depends only on the world size and the buffer length, never on timing, so a
    /// rerun of the same job reduces to the same bits.
    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), CollectiveError>;

    /// Replaces `buffer` by its mean over all ranks.
    fn all_reduce_mean(&mut self, buffer: &mut [f32]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(buffer)?;
        let ranks = self.world_size() as f32;
        buffer.iter_mut().for_each(|value| *value /= ranks);
        Ok(())
    }

    /// Replaces `bytes` on every rank by rank `root`'s.
    fn broadcast(&mut self, bytes: &mut [u8], root: usize) -> Result<(), CollectiveError>;

    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.all_reduce_sum(&mut [0.0])
    }
}

/// A world of one rank: every operation leaves its buffer as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&mut self, _buffer: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&mut self, _bytes: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        check_root(root, 1)
    }
}

pub(crate) fn check_root(root: usize, world: usize) -> Result<(), CollectiveError> {
    if root < world {
        Ok(())
    } else {
        Err(CollectiveError::Usage(format!("broadcast from rank {root} in a world of {world}")))
    }
}
