//! NVML through `nvml-wrapper`, which loads `libnvidia-ml.so.1` at run time and reports a
//! missing library as an error rather than a panic.

use super::NvmlDevice;
use nvml_wrapper::Nvml;
use std::fmt;
use std::path::Path;

/// A loaded NVML and the fixed facts of its devices.
pub(super) struct NvmlSource {
    nvml: Nvml,
    /// (uuid, name) per index, read once: they do not change while the driver is loaded.
    ids: Vec<(Option<String>, Option<String>)>,
}

impl fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlSource").field("devices", &self.ids.len()).finish()
    }
}

impl NvmlSource {
    pub(super) fn open(lib: Option<&Path>) -> Result<NvmlSource, String> {
        let nvml = match lib {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        }
        .map_err(|e| format!("{e}"))?;
        let count = nvml.device_count().map_err(|e| format!("counting devices: {e}"))?;
        let ids = (0..count)
            .map(|i| match nvml.device_by_index(i) {
                Ok(d) => (d.uuid().ok(), d.name().ok()),
                Err(_) => (None, None),
            })
            .collect();
        Ok(NvmlSource { nvml, ids })
    }

    pub(super) fn count(&self) -> usize {
        self.ids.len()
    }

    /// Reads every device. A device that fails is reported with empty figures; only a failure
    /// of every device is an error, so one lost GPU does not hide the others.
    pub(super) fn read(&self) -> Result<Vec<NvmlDevice>, String> {
        let mut out = Vec::with_capacity(self.ids.len());
        let mut last_error = None;
        for (index, (uuid, name)) in (0u32..).zip(&self.ids) {
            let mut dev = NvmlDevice { index, uuid: uuid.clone(), name: name.clone(), ..Default::default() };
            match self.nvml.device_by_index(index) {
                Ok(d) => {
                    dev.utilization_percent = d.utilization_rates().ok().map(|u| u.gpu);
                    match d.memory_info() {
                        Ok(m) => {
                            dev.used_bytes = Some(m.used);
                            dev.total_bytes = Some(m.total);
                        }
                        Err(e) => last_error = Some(format!("device {index}: {e}")),
                    }
                }
                Err(e) => last_error = Some(format!("device {index}: {e}")),
            }
            out.push(dev);
        }
        let all_empty = out.iter().all(|d| d.utilization_percent.is_none() && d.used_bytes.is_none());
        match last_error {
            Some(e) if all_empty => Err(format!("NVML: {e}")),
            _ => Ok(out),
        }
    }
}
