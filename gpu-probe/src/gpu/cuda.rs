//! The CUDA driver through `cudarc` with dynamic loading.
//!
//! cudarc panics when a driver function is called and `libcuda.so` cannot be loaded, so the
//! library's presence is checked first with `is_culib_present`, and the calls are made inside
//! `catch_unwind` as a second guard (the workspace builds with `panic = "unwind"`).
//!
//! Without `--cuda-mem-info` no context is created: the device count, names, UUIDs and total
//! memory come from `cuDevice*` calls, which cost the model server nothing. With it, the
//! primary context of each device is retained for the life of the probe, and free memory is
//! read through it.

#![allow(unsafe_code)]

use super::{CudaDevice, format_uuid};
use cudarc::driver::{CudaContext, result, sys};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// The devices the CUDA driver shows, and their contexts when free memory is wanted.
#[derive(Debug)]
pub(super) struct CudaSource {
    devices: Vec<CudaDevice>,
    contexts: Vec<Arc<CudaContext>>,
}

/// Whether `libcuda.so` can be loaded.
pub(super) fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on the driver's library names and drops
    // the handle; it has no preconditions. It is `unsafe` because loading a library runs its
    // initialisers, which is what loading the NVIDIA driver library is for.
    unsafe { sys::is_culib_present() }
}

impl CudaSource {
    pub(super) fn open(mem_info: bool) -> Result<CudaSource, String> {
        if !driver_present() {
            return Err("libcuda.so not found".to_owned());
        }
        let opened = catch_unwind(AssertUnwindSafe(|| Self::open_inner(mem_info)));
        opened.unwrap_or_else(|_| Err("the CUDA driver library failed to load".to_owned()))
    }

    fn open_inner(mem_info: bool) -> Result<CudaSource, String> {
        result::init().map_err(|e| format!("cuInit: {e:?}"))?;
        let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e:?}"))?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let dev = result::device::get(ordinal).map_err(|e| format!("cuDeviceGet({ordinal}): {e:?}"))?;
            // SAFETY: `dev` was just returned by `cuDeviceGet`, which is `total_mem`'s only
            // precondition.
            let total = unsafe { result::device::total_mem(dev) }.ok();
            let uuid = result::device::get_uuid(dev).ok().map(|u| format_uuid(u.bytes.map(|b| b as u8)));
            devices.push(CudaDevice {
                ordinal: u32::try_from(ordinal).unwrap_or(u32::MAX),
                uuid,
                name: result::device::get_name(dev).ok(),
                total_bytes: total.map(|t| t as u64),
                free_bytes: None,
            });
        }
        let mut contexts = Vec::new();
        if mem_info {
            for d in &devices {
                let ctx = CudaContext::new(d.ordinal as usize)
                    .map_err(|e| format!("creating a context on device {}: {e:?}", d.ordinal))?;
                contexts.push(ctx);
            }
        }
        Ok(CudaSource { devices, contexts })
    }

    pub(super) fn count(&self) -> usize {
        self.devices.len()
    }

    pub(super) fn read(&self) -> Vec<CudaDevice> {
        let mut out = self.devices.clone();
        for (dev, ctx) in out.iter_mut().zip(&self.contexts) {
            let info = catch_unwind(AssertUnwindSafe(|| ctx.mem_get_info())).ok().and_then(Result::ok);
            if let Some((free, total)) = info {
                dev.free_bytes = Some(free as u64);
                dev.total_bytes = Some(total as u64);
            }
        }
        out
    }
}
