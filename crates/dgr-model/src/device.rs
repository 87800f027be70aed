//! Choosing where models run. CPU (Burn's `flex`) always works; CUDA needs a build with the
//! `cuda` feature *and* a machine with a driver and a device, which is probed first so that a
//! missing GPU is an error message, never a panic in a device thread.

use burn::tensor::Device;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// `[device]`: where a job's models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `cpu` (Burn's `flex`, always there) or `cuda` (a build with the `cuda` feature on a
    /// machine with a GPU). A training rank takes the GPU of its local rank, every other
    /// process GPU 0 (`CUDA_VISIBLE_DEVICES` picks others).
    pub kind: DeviceKind,
}

impl DeviceConfig {
    /// The device of the process whose index on its node is `local_rank`.
    pub fn select(&self, local_rank: usize) -> Result<Device> {
        select(self.kind, local_rank)
    }
}

/// The device of `kind`; `index` picks the GPU for CUDA.
pub fn select(kind: DeviceKind, index: usize) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        DeviceKind::Cuda => cuda(index),
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    use cudarc::driver::{result, sys};
    let unavailable = |why: String| ModelError::Device(format!("CUDA device {index} unavailable: {why}"));
    // SAFETY: only tries to load the driver library; no CUDA call is made if it is absent.
    if !unsafe { sys::is_culib_present() } {
        return Err(unavailable("the CUDA driver library (libcuda) is not installed".into()));
    }
    result::init().map_err(|e| unavailable(format!("driver initialisation failed: {e:?}")))?;
    let count = result::device::get_count().map_err(|e| unavailable(format!("cannot count devices: {e:?}")))?;
    if index >= usize::try_from(count).unwrap_or(0) {
        return Err(unavailable(format!("the machine has {count} CUDA device(s)")));
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    Err(ModelError::Device("this build has no CUDA support: build dgr with `--features cuda`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_works_and_cuda_without_a_gpu_is_an_error_not_a_panic() {
        assert!(select(DeviceKind::Cpu, 0).is_ok());
        // The test machines have no GPU: with or without the feature, this must be an Err.
        let err = select(DeviceKind::Cuda, 0).unwrap_err().to_string();
        assert!(err.contains("CUDA"), "{err}");
    }
}
