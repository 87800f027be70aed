//! NCCL between GPU ranks, through cudarc (the library is loaded at run time).
//!
//! Rank 0 makes the job's [`unique_id`], the rendezvous hands its 128 bytes to the others, and
//! every rank builds its communicator on its device with [`NcclCollective::new`]. Gradients are
//! reduced where they are, in device memory ([`NcclCollective::all_reduce_device_sum`]); the
//! [`Collective`] operations on host buffers copy through the device and serve the small
//! exchanges (step counters, checks).

use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use crate::{Collective, CollectiveError, check_root};

/// The 128 bytes that identify one NCCL communicator; made once, on rank 0.
pub fn unique_id() -> Result<[u8; 128], CollectiveError> {
    let id = Id::new().map_err(nccl_error("cannot make the unique id"))?;
    Ok(id.internal().map(|byte| byte as u8))
}

/// Whether the NCCL library can be loaded on this machine.
pub fn available() -> bool {
    // SAFETY: the probes only try to open the shared libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nccl::sys::is_culib_present() }
}

/// One rank of an NCCL communicator, on one device.
pub struct NcclCollective {
    comm: Comm,
    stream: Arc<CudaStream>,
}

// SAFETY: NCCL lets a communicator be used from any thread as long as no two use it at once;
// every operation here takes `&mut self`, so a rank's collective moves between threads (the
// training loop's) but is never shared.
unsafe impl Send for NcclCollective {}

impl NcclCollective {
    /// Joins the communicator `id` as `rank` of `world`, on device `ordinal` (blocks until every
    /// rank has joined).
    pub fn new(ordinal: usize, rank: usize, world: usize, id: &[u8; 128]) -> Result<Self, CollectiveError> {
        if !available() {
            return Err(CollectiveError::Nccl("the CUDA driver or libnccl.so cannot be loaded".into()));
        }
        let context = CudaContext::new(ordinal).map_err(driver_error("cannot open the device"))?;
        let stream = context.new_stream().map_err(driver_error("cannot make a stream"))?;
        let id = Id::uninit(id.map(|byte| byte as core::ffi::c_char));
        let comm =
            Comm::from_rank(stream.clone(), rank, world, id).map_err(nccl_error("cannot join the communicator"))?;
        Ok(NcclCollective { comm, stream })
    }

    /// The stream this rank's collectives run on: device buffers for
    /// [`NcclCollective::all_reduce_device`] are made on it.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Sums `buffer`, device memory of this rank's stream, over all ranks, in place, and waits
    /// for the result.
    pub fn all_reduce_device(&mut self, buffer: &mut CudaSlice<f32>) -> Result<(), CollectiveError> {
        self.comm.all_reduce_in_place(buffer, &ReduceOp::Sum).map_err(nccl_error("all-reduce failed"))?;
        self.stream.synchronize().map_err(driver_error("cannot wait for the all-reduce"))
    }

    /// Sums `length` f32 values at `pointer` over all ranks, in place, and waits for the result.
    ///
    /// # Safety
    /// `pointer` must address at least `length` f32 values of device memory in this device's
    /// primary context, which nothing else reads or writes until this returns (synchronise the
    /// device before the call).
    pub unsafe fn all_reduce_device_sum(&mut self, pointer: CUdeviceptr, length: usize) -> Result<(), CollectiveError> {
        // SAFETY: the caller guarantees the pointer and length; the slice is leaked below, so
        // the memory stays its owner's.
        let mut slice = unsafe { self.stream.upgrade_device_ptr::<f32>(pointer, length) };
        let reduced = self.comm.all_reduce_in_place(&mut slice, &ReduceOp::Sum);
        slice.leak();
        reduced.map_err(nccl_error("all-reduce failed"))?;
        self.stream.synchronize().map_err(driver_error("cannot wait for the all-reduce"))
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), CollectiveError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let mut device = self.stream.clone_htod(buffer).map_err(driver_error("cannot copy to the device"))?;
        self.comm.all_reduce_in_place(&mut device, &ReduceOp::Sum).map_err(nccl_error("all-reduce failed"))?;
        self.stream.memcpy_dtoh(&device, buffer).map_err(driver_error("cannot copy from the device"))?;
        self.stream.synchronize().map_err(driver_error("cannot wait for the all-reduce"))
    }

    fn broadcast(&mut self, bytes: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.world_size())?;
        if bytes.is_empty() {
            return Ok(());
        }
        let mut device = self.stream.clone_htod(bytes).map_err(driver_error("cannot copy to the device"))?;
        self.comm.broadcast_in_place(&mut device, root as i32).map_err(nccl_error("broadcast failed"))?;
        self.stream.memcpy_dtoh(&device, bytes).map_err(driver_error("cannot copy from the device"))?;
        self.stream.synchronize().map_err(driver_error("cannot wait for the broadcast"))
    }
}

fn nccl_error(action: &'static str) -> impl FnOnce(cudarc::nccl::result::NcclError) -> CollectiveError {
    move |error| CollectiveError::Nccl(format!("{action}: {error:?}"))
}

fn driver_error(action: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> CollectiveError {
    move |error| CollectiveError::Nccl(format!("{action}: {error}"))
}
