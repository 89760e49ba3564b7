//! Applying the rules: finding `iptables-save` and `iptables-restore`, checking the capability,
//! and running them. The rules themselves are made in [`super::rules`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `CAP_NET_ADMIN`'s bit in the capability sets of `/proc/self/status`.
const CAP_NET_ADMIN: u32 = 12;

/// Why the rules could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The process may not change the network namespace's tables.
    #[error(
        "this process lacks CAP_NET_ADMIN, which changing the nat table needs (run the init step as root with the NET_ADMIN and NET_RAW capabilities)"
    )]
    NoCapability,
    /// A tool is not installed.
    #[error("{0} not found in PATH (install iptables, or choose another with --iptables)")]
    Missing(String),
    /// A tool ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A tool could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
}

/// Whether a `/proc/<pid>/status` text says the effective set has `CAP_NET_ADMIN`; `None` when
/// it has no `CapEff` line.
pub fn has_net_admin(status: &str) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Checks the capability (where `/proc` says; elsewhere iptables will say).
pub fn check_capability() -> Result<(), ApplyError> {
    match std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(has_net_admin) {
        Some(false) => Err(ApplyError::NoCapability),
        _ => Ok(()),
    }
}

/// The iptables front end: `<name>-save` and `<name>-restore` (`iptables`, `iptables-legacy`,
/// `iptables-nft`).
#[derive(Clone, Debug)]
pub struct Iptables {
    save: PathBuf,
    restore: PathBuf,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Iptables {
    /// Finds `<name>-save` and `<name>-restore` in `PATH`.
    pub fn find(name: &str) -> Result<Iptables, ApplyError> {
        let find = |tool: String| find_in_path(&tool).ok_or(ApplyError::Missing(tool));
        Ok(Iptables { save: find(format!("{name}-save"))?, restore: find(format!("{name}-restore"))? })
    }

    /// The nat table as it is now.
    pub fn save(&self) -> Result<String, ApplyError> {
        let command = format!("{} -t nat", self.save.display());
        let out = Command::new(&self.save)
            .args(["-t", "nat"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ApplyError::Spawn(command.clone(), e))?;
        if !out.status.success() {
            return Err(failed(command, out.status, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies `input` with `iptables-restore --noflush` (tables and chains it does not name stay).
    pub fn restore(&self, input: &str) -> Result<(), ApplyError> {
        let command = format!("{} --noflush", self.restore.display());
        let mut child = Command::new(&self.restore)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ApplyError::Spawn(command.clone(), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(|e| ApplyError::Spawn(command.clone(), e))?;
        }
        let out = child.wait_with_output().map_err(|e| ApplyError::Spawn(command.clone(), e))?;
        if !out.status.success() {
            return Err(failed(command, out.status, &out.stderr));
        }
        Ok(())
    }
}

fn failed(command: String, status: std::process::ExitStatus, stderr: &[u8]) -> ApplyError {
    let stderr = String::from_utf8_lossy(stderr).trim().to_string();
    ApplyError::Failed { command, status: status.to_string(), stderr }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capability_is_read_from_the_effective_set() {
        let status = |eff: &str| format!("Name:\tvane-proxy\nCapInh:\t0000000000000000\nCapEff:\t{eff}\n");
        assert_eq!(has_net_admin(&status("000001ffffffffff")), Some(true));
        assert_eq!(has_net_admin(&status("0000000000001000")), Some(true));
        assert_eq!(has_net_admin(&status("0000000000002000")), Some(false));
        assert_eq!(has_net_admin(&status("0000000000000000")), Some(false));
        assert_eq!(has_net_admin("Name:\tx\n"), None);
    }

    #[test]
    fn a_missing_tool_is_named() {
        let e = Iptables::find("no-such-iptables-here").unwrap_err();
        assert!(e.to_string().starts_with("no-such-iptables-here-save not found in PATH"), "{e}");
    }
}
