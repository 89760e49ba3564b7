//! Runs `kubernetes-validate --strict` (PyPI) on files, against the given Kubernetes versions.
//!
//! The tool is looked for in `VANE_K8S_VALIDATE` (a path), then on `PATH`, then in the venv
//! `.ci/run` makes (`target/venv`). Without it the check is skipped with a message, unless
//! `VANE_REQUIRE_K8S_VALIDATE=1` (set by `.ci/run`), which makes a missing tool a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VANE_K8S_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("kubernetes-validate"))
        .find(|p| p.is_file());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/kubernetes-validate");
    on_path.or_else(|| venv.is_file().then_some(venv))
}

/// Validates `files` strictly against each of `versions` (e.g. "1.29"; "" is the tool's
/// latest), one resource per file. Panics with the tool's output on a failure; returns `false`
/// when skipped.
#[allow(dead_code)] // not every test crate that includes this module calls both functions
pub fn strict(files: &[PathBuf], versions: &[&str]) -> bool {
    strict_resources(files, versions, files.len())
}

/// As [`strict`], for files that hold `resources` resources in all (multi-document files, a
/// `kubectl kustomize` rendering): every one of them must be reported as passed.
pub fn strict_resources(files: &[PathBuf], versions: &[&str], resources: usize) -> bool {
    let Some(tool) = tool() else {
        if std::env::var("VANE_REQUIRE_K8S_VALIDATE").is_ok_and(|v| v == "1") {
            panic!(
                "kubernetes-validate not found and VANE_REQUIRE_K8S_VALIDATE=1 (install: pip install kubernetes-validate)"
            );
        }
        eprintln!(
            "SKIPPED: schema validation of {} files: kubernetes-validate not found \
             (pip install kubernetes-validate, or run .ci/run)",
            files.len()
        );
        return false;
    };
    for version in versions {
        let mut cmd = Command::new(&tool);
        cmd.arg("--strict");
        if !version.is_empty() {
            cmd.args(["-k", version]);
        }
        let out = cmd.args(files).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubernetes-validate --strict -k {version:?} failed:\n{text}");
        assert_eq!(
            text.matches(" passed ").count(),
            resources,
            "not every resource was checked against {version:?}:\n{text}"
        );
    }
    true
}
