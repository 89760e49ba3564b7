//! The GPU side of the load: utilisation and memory per device.
//!
//! Two sources, both loaded from the driver at run time so that one binary runs everywhere:
//! - **NVML** (through `nvml-wrapper`): utilisation and memory used/total, without touching
//!   the model server's CUDA state;
//! - **the CUDA driver** (through `cudarc` with dynamic loading): device names and total
//!   memory without a context, and, only with `--cuda-mem-info`, free/total memory as CUDA
//!   sees it. That last reading needs a CUDA context on every device, which itself takes a
//!   few hundred MiB of GPU memory from the model server, hence opt-in.
//!
//! Devices are matched across the two sources by UUID, since NVML counts in PCI order and CUDA
//! in `CUDA_DEVICE_ORDER`. Without a driver (or with the `gpu` feature off) [`GpuReader::open`]
//! returns a [`GpuUnavailable`] that says why in one line; the probe logs it once and keeps
//! serving the model server's figures with `"gpu": null`.
//!
//! Reading NVML is a blocking FFI call, so it runs on its own thread ([`spawn`]) at its own,
//! slower interval (utilisation is itself averaged by the driver over 1/6 s to 1 s).

#[cfg(feature = "gpu")]
mod cuda;
#[cfg(feature = "gpu")]
mod nvml;

use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How to read the GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Read the GPU at all.
    pub enabled: bool,
    /// Where `libnvidia-ml.so.1` is, if not on the loader's path.
    pub nvml_lib: Option<PathBuf>,
    /// Ask the CUDA driver too (names and total memory; no context).
    pub cuda: bool,
    /// Also read free/total memory through a CUDA context on each device (costs GPU memory).
    pub cuda_mem_info: bool,
    /// How often to read.
    pub interval: Duration,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            enabled: true,
            nvml_lib: None,
            cuda: true,
            cuda_mem_info: false,
            interval: Duration::from_millis(500),
        }
    }
}

/// The GPUs of this pod at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuSnapshot {
    /// Number of devices.
    pub count: usize,
    /// Mean utilisation over the devices that report it, 0..1.
    pub utilization: Option<f64>,
    /// Memory used, summed over devices (NVML).
    pub memory_used_bytes: Option<u64>,
    /// Memory installed, summed over devices (NVML, else CUDA).
    pub memory_total_bytes: Option<u64>,
    /// Each device.
    pub devices: Vec<GpuDevice>,
    /// When it was read.
    pub updated_unix_ms: u64,
}

/// One device. Every figure is optional: a MIG slice, for one, has no utilisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GpuDevice {
    /// NVML index (or CUDA ordinal when NVML is missing).
    pub index: u32,
    /// `GPU-…` UUID.
    pub uuid: Option<String>,
    /// Marketing name.
    pub name: Option<String>,
    /// Share of the last sample period with a kernel running, 0..1 (NVML).
    pub utilization: Option<f64>,
    /// Memory in use by all processes (NVML).
    pub memory_used_bytes: Option<u64>,
    /// Memory installed (NVML).
    pub memory_total_bytes: Option<u64>,
    /// The CUDA ordinal of this device in this process.
    pub cuda_ordinal: Option<u32>,
    /// Total memory as the CUDA driver reports it.
    pub cuda_total_bytes: Option<u64>,
    /// Free memory as a CUDA context sees it (`--cuda-mem-info` only).
    pub cuda_free_bytes: Option<u64>,
}

/// Why there are no GPU figures. The message is meant for a log line and for `/load`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuUnavailable {
    /// Turned off on the command line.
    #[error("GPU reading is turned off (--no-gpu)")]
    Disabled,
    /// Built without the `gpu` feature.
    #[error("this build has no GPU support (built without the `gpu` feature)")]
    NotBuilt,
    /// Neither NVML nor the CUDA driver could be loaded.
    #[error("no GPU driver found, serving model-server figures only (NVML: {nvml}; CUDA: {cuda})")]
    NoDriver {
        /// Why NVML failed.
        nvml: String,
        /// Why the CUDA driver failed.
        cuda: String,
    },
    /// A driver is there but shows no device.
    #[error("the GPU driver is loaded but shows no device")]
    NoDevices,
}

/// What `/load` shows about the GPU: a snapshot, or why there is none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuView {
    /// The latest reading.
    pub snapshot: Option<Arc<GpuSnapshot>>,
    /// `None` when all is well; otherwise a one-line reason (no driver, read failure, …).
    pub status: Option<String>,
}

/// One device as NVML reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NvmlDevice {
    /// NVML index.
    pub index: u32,
    /// UUID.
    pub uuid: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Utilisation percentage, 0..100.
    pub utilization_percent: Option<u32>,
    /// Memory used.
    pub used_bytes: Option<u64>,
    /// Memory installed.
    pub total_bytes: Option<u64>,
}

/// One device as the CUDA driver reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CudaDevice {
    /// CUDA ordinal.
    pub ordinal: u32,
    /// UUID in NVML's `GPU-…` form.
    pub uuid: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Total memory.
    pub total_bytes: Option<u64>,
    /// Free memory seen from a context, when one is held.
    pub free_bytes: Option<u64>,
}

/// Reads the GPUs; holds the loaded driver libraries.
#[derive(Debug)]
pub struct GpuReader {
    #[cfg(feature = "gpu")]
    nvml: Option<nvml::NvmlSource>,
    #[cfg(feature = "gpu")]
    cuda: Option<cuda::CudaSource>,
    /// Sources that failed while another worked, for the log.
    notes: Vec<String>,
}

// === impl GpuReader ===

impl GpuReader {
    /// Loads what the driver offers. Never panics: without a driver it says why.
    pub fn open(cfg: &GpuConfig) -> Result<GpuReader, GpuUnavailable> {
        if !cfg.enabled {
            return Err(GpuUnavailable::Disabled);
        }
        Self::open_sources(cfg)
    }

    #[cfg(not(feature = "gpu"))]
    fn open_sources(_cfg: &GpuConfig) -> Result<GpuReader, GpuUnavailable> {
        Err(GpuUnavailable::NotBuilt)
    }

    #[cfg(feature = "gpu")]
    fn open_sources(cfg: &GpuConfig) -> Result<GpuReader, GpuUnavailable> {
        let nvml = nvml::NvmlSource::open(cfg.nvml_lib.as_deref());
        let cuda = if cfg.cuda { cuda::CudaSource::open(cfg.cuda_mem_info) } else { Err("not asked for".to_owned()) };
        let mut notes = Vec::new();
        let (nvml, cuda) = match (nvml, cuda) {
            (Err(nvml), Err(cuda)) => return Err(GpuUnavailable::NoDriver { nvml, cuda }),
            (Ok(n), Err(c)) => {
                notes.push(format!("CUDA: {c}"));
                (Some(n), None)
            }
            (Err(n), Ok(c)) => {
                notes.push(format!("NVML: {n}; utilisation and memory in use are not available"));
                (None, Some(c))
            }
            (Ok(n), Ok(c)) => (Some(n), Some(c)),
        };
        let reader = GpuReader { nvml, cuda, notes };
        // Both sources see the same devices; either one showing any is enough.
        let devices =
            Ord::max(reader.nvml.as_ref().map_or(0, |n| n.count()), reader.cuda.as_ref().map_or(0, |c| c.count()));
        if devices == 0 {
            return Err(GpuUnavailable::NoDevices);
        }
        Ok(reader)
    }

    /// Partial failures worth a log line (one source missing while the other works).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Reads every device now.
    pub fn read(&mut self) -> Result<GpuSnapshot, String> {
        #[cfg(feature = "gpu")]
        {
            let nvml = match &self.nvml {
                Some(n) => n.read()?,
                None => Vec::new(),
            };
            let cuda = self.cuda.as_ref().map(|c| c.read()).unwrap_or_default();
            Ok(merge(&nvml, &cuda, unix_ms(SystemTime::now())))
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(GpuUnavailable::NotBuilt.to_string())
        }
    }
}

/// Combines the two sources' views of the devices. Pure.
pub fn merge(nvml: &[NvmlDevice], cuda: &[CudaDevice], updated_unix_ms: u64) -> GpuSnapshot {
    let mut devices: Vec<GpuDevice> = nvml
        .iter()
        .map(|n| GpuDevice {
            index: n.index,
            uuid: n.uuid.clone(),
            name: n.name.clone(),
            utilization: n.utilization_percent.map(|p| (f64::from(p) / 100.0).clamp(0.0, 1.0)),
            memory_used_bytes: n.used_bytes,
            memory_total_bytes: n.total_bytes,
            ..GpuDevice::default()
        })
        .collect();
    for c in cuda {
        let same_uuid = |d: &&mut GpuDevice| match (&d.uuid, &c.uuid) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        // Without UUIDs on both sides, fall back to position only when nothing can be wrong:
        // a single device on each side.
        let single = nvml.len() == 1 && cuda.len() == 1;
        let target = if let Some(d) = devices.iter_mut().find(same_uuid) {
            d
        } else if single && let Some(d) = devices.first_mut() {
            d
        } else {
            devices.push(GpuDevice {
                index: c.ordinal,
                uuid: c.uuid.clone(),
                name: c.name.clone(),
                ..GpuDevice::default()
            });
            let last = devices.len() - 1;
            &mut devices[last]
        };
        target.cuda_ordinal = Some(c.ordinal);
        target.cuda_total_bytes = c.total_bytes;
        target.cuda_free_bytes = c.free_bytes;
        if target.name.is_none() {
            target.name = c.name.clone();
        }
    }
    let utils: Vec<f64> = devices.iter().filter_map(|d| d.utilization).collect();
    let utilization = (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64);
    let sum = |f: &dyn Fn(&GpuDevice) -> Option<u64>| devices.iter().filter_map(f).reduce(|a, b| a.saturating_add(b));
    GpuSnapshot {
        count: devices.len(),
        utilization,
        memory_used_bytes: sum(&|d| d.memory_used_bytes),
        memory_total_bytes: sum(&|d| d.memory_total_bytes.or(d.cuda_total_bytes)),
        devices,
        updated_unix_ms,
    }
}

/// Writes a CUDA UUID the way NVML does: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(bytes: [u8; 16]) -> String {
    let mut out = String::with_capacity(40);
    out.push_str("GPU-");
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A running GPU reader thread; dropping it stops the thread at its next wake-up.
#[derive(Debug)]
pub struct GpuTask {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl GpuTask {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for GpuTask {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads the GPU every `interval` on a thread of its own and publishes into `out`.
pub fn spawn(mut reader: GpuReader, interval: Duration, out: Arc<ArcSwap<GpuView>>) -> std::io::Result<GpuTask> {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = thread::Builder::new().name("vane-gpu".into()).spawn(move || {
        let mut last_error: Option<String> = None;
        loop {
            let view = match reader.read() {
                Ok(snap) => {
                    if last_error.take().is_some() {
                        tracing::info!("GPU readings are back");
                    }
                    GpuView { snapshot: Some(Arc::new(snap)), status: None }
                }
                Err(e) => {
                    if last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(error = %e, "GPU read failed");
                        last_error = Some(e.clone());
                    }
                    GpuView { snapshot: None, status: Some(format!("GPU read failed: {e}")) }
                }
            };
            out.store(Arc::new(view));
            match stopped.recv_timeout(interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        }
    })?;
    Ok(GpuTask { stop: Some(stop), handle: Some(handle) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_written_like_nvml() {
        let bytes = [0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x79, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 0x00];
        assert_eq!(format_uuid(bytes), "GPU-1f2e3d4c-5b6a-7988-97a6-b5c4d3e2f100");
    }

    fn nv(index: u32, uuid: &str, util: u32, used: u64, total: u64) -> NvmlDevice {
        NvmlDevice {
            index,
            uuid: Some(uuid.into()),
            name: Some("NVIDIA H100 80GB HBM3".into()),
            utilization_percent: Some(util),
            used_bytes: Some(used),
            total_bytes: Some(total),
        }
    }

    #[test]
    fn merges_by_uuid_whatever_the_order() {
        let nvml = [nv(0, "GPU-aa", 50, 10, 100), nv(1, "GPU-BB", 100, 30, 100)];
        let cuda = [
            CudaDevice { ordinal: 0, uuid: Some("GPU-bb".into()), total_bytes: Some(99), ..Default::default() },
            CudaDevice { ordinal: 1, uuid: Some("GPU-aa".into()), free_bytes: Some(7), ..Default::default() },
        ];
        let s = merge(&nvml, &cuda, 42);
        assert_eq!(s.count, 2);
        assert_eq!(s.utilization, Some(0.75));
        assert_eq!(s.memory_used_bytes, Some(40));
        assert_eq!(s.memory_total_bytes, Some(200));
        assert_eq!(s.devices[0].cuda_ordinal, Some(1));
        assert_eq!(s.devices[0].cuda_free_bytes, Some(7));
        assert_eq!(s.devices[1].cuda_ordinal, Some(0));
        assert_eq!(s.devices[1].cuda_total_bytes, Some(99));
        assert_eq!(s.updated_unix_ms, 42);
    }

    #[test]
    fn cuda_alone_still_gives_devices_and_total_memory() {
        let cuda = [CudaDevice {
            ordinal: 0,
            uuid: None,
            name: Some("NVIDIA L4".into()),
            total_bytes: Some(24 << 30),
            free_bytes: None,
        }];
        let s = merge(&[], &cuda, 0);
        assert_eq!(s.count, 1);
        assert_eq!(s.utilization, None);
        assert_eq!(s.memory_used_bytes, None);
        assert_eq!(s.memory_total_bytes, Some(24 << 30));
        assert_eq!(s.devices[0].name.as_deref(), Some("NVIDIA L4"));
    }

    #[test]
    fn a_lone_device_is_matched_without_uuids() {
        let mut n = nv(0, "x", 20, 1, 2);
        n.uuid = None;
        let cuda = [CudaDevice { ordinal: 0, total_bytes: Some(2), ..Default::default() }];
        let s = merge(&[n], &cuda, 0);
        assert_eq!(s.count, 1);
        assert_eq!(s.devices[0].cuda_ordinal, Some(0));
    }

    #[test]
    fn turned_off_says_so() {
        let cfg = GpuConfig { enabled: false, ..GpuConfig::default() };
        assert_eq!(GpuReader::open(&cfg).unwrap_err(), GpuUnavailable::Disabled);
    }

    /// The no-driver path with the feature on: NVML pointed at a library that does not exist
    /// and CUDA not asked, so the result is the same on any machine.
    #[cfg(feature = "gpu")]
    #[test]
    fn without_a_driver_open_fails_with_a_clear_message() {
        let cfg =
            GpuConfig { nvml_lib: Some("/nonexistent/libnvidia-ml.so.1".into()), cuda: false, ..GpuConfig::default() };
        let err = GpuReader::open(&cfg).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GpuUnavailable::NoDriver { .. }), "{msg}");
        assert!(msg.starts_with("no GPU driver found"), "{msg}");
        assert!(msg.contains("/nonexistent/libnvidia-ml.so.1"), "{msg}");
    }

    #[cfg(not(feature = "gpu"))]
    #[test]
    fn without_the_feature_open_says_so() {
        assert_eq!(GpuReader::open(&GpuConfig::default()).unwrap_err(), GpuUnavailable::NotBuilt);
    }
}
