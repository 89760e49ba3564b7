//! Credentials kept in files and read again: the proxy's certificate in standalone mode and the
//! control service's webhook certificate. A set of files is read whole each time and compared
//! with what was read before; only a change is handed on, to be checked and put into use (or
//! refused, keeping the old set).
//!
//! Internal: content is compared rather than modification times, because a Secret mounted as a
//! volume is swapped through a symlink (`..data` → a new timestamped folder), whose target's time
//! is not what `stat` on the path sees on every kubelet.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("vane-files-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! use vane_identity::files::Watched;
//!
//! let cert = dir.join("tls.crt");
//! std::fs::write(&cert, "one").unwrap();
//! let watched = Watched::new(vec![cert.clone()]);
//! let first = watched.changed().unwrap().expect("the first read is a change");
//! watched.accept(first);
//! assert!(watched.changed().unwrap().is_none(), "unchanged");
//! std::fs::write(&cert, "two").unwrap();
//! assert_eq!(watched.changed().unwrap().unwrap().bytes(0), b"two");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a set of files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that should hold PEM text is not UTF-8.
    #[error("{} is not text (UTF-8)", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// What a set of files held when it was read, in the order of their paths.
#[derive(Clone, PartialEq, Eq)]
pub struct Contents {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: one of the files may be a private key.
        let sizes: Vec<(&Path, usize)> = self.files.iter().map(|(p, b)| (p.as_path(), b.len())).collect();
        f.debug_struct("Contents").field("files", &sizes).finish()
    }
}

impl Contents {
    /// Reads every file of `paths`.
    pub fn read(paths: &[PathBuf]) -> Result<Contents, ReadError> {
        let files = paths
            .iter()
            .map(|path| match std::fs::read(path) {
                Ok(bytes) => Ok((path.clone(), bytes)),
                Err(source) => Err(ReadError::Read { path: path.clone(), source }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Contents { files })
    }

    /// The bytes of file `i` (empty past the last).
    pub fn bytes(&self, i: usize) -> &[u8] {
        self.files.get(i).map_or(&[], |(_, b)| b.as_slice())
    }

    /// The text of file `i` (empty past the last).
    pub fn text(&self, i: usize) -> Result<&str, ReadError> {
        match self.files.get(i) {
            Some((path, bytes)) => std::str::from_utf8(bytes).map_err(|_| ReadError::NotText { path: path.clone() }),
            None => Ok(""),
        }
    }

    /// The path of file `i`.
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.files.get(i).map(|(p, _)| p.as_path())
    }
}

/// A set of files read again and again: [`Watched::changed`] hands on a content that differs
/// from the one last [accepted](Watched::accept) and from the one last
/// [refused](Watched::refuse), so that a bad set is reported once, not at every read.
#[derive(Debug)]
pub struct Watched {
    paths: Vec<PathBuf>,
    state: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    accepted: Option<Contents>,
    refused: Option<Contents>,
}

impl Watched {
    /// Files at `paths`, none read yet (so the first read is a change).
    pub fn new(paths: Vec<PathBuf>) -> Watched {
        Watched { paths, state: Mutex::new(Seen::default()) }
    }

    /// The paths, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Two options replaced whole: a holder that panicked left them consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the files; `Some` when they changed since the content last accepted or refused.
    pub fn changed(&self) -> Result<Option<Contents>, ReadError> {
        let now = Contents::read(&self.paths)?;
        let seen = self.seen();
        let same = |c: &Option<Contents>| c.as_ref() == Some(&now);
        Ok(if same(&seen.accepted) || same(&seen.refused) { None } else { Some(now) })
    }

    /// Reads the files; `Some` when they differ from the content last accepted (a refused
    /// content is handed on again at every read).
    pub fn changed_since_accepted(&self) -> Result<Option<Contents>, ReadError> {
        let now = Contents::read(&self.paths)?;
        Ok(if self.seen().accepted.as_ref() == Some(&now) { None } else { Some(now) })
    }

    /// Marks `contents` as the set in use.
    pub fn accept(&self, contents: Contents) {
        let mut seen = self.seen();
        seen.accepted = Some(contents);
        seen.refused = None;
    }

    /// Marks `contents` as refused: the same content is not handed on again.
    pub fn refuse(&self, contents: Contents) {
        self.seen().refused = Some(contents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vane-identity-files-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_change_is_handed_on_once_whether_accepted_or_refused() {
        let d = dir("change");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::write(&a, "a1").unwrap();
        let w = Watched::new(vec![a.clone(), b.clone()]);
        assert!(matches!(w.changed(), Err(ReadError::Read { path, .. }) if path == b), "a missing file fails the read");
        std::fs::write(&b, "b1").unwrap();
        let first = w.changed().unwrap().unwrap();
        assert_eq!((first.text(0).unwrap(), first.text(1).unwrap(), first.text(2).unwrap()), ("a1", "b1", ""));
        w.accept(first);
        assert!(w.changed().unwrap().is_none());

        std::fs::write(&b, "bad").unwrap();
        let bad = w.changed().unwrap().unwrap();
        w.refuse(bad);
        assert!(w.changed().unwrap().is_none(), "a refused set is not handed on again");
        assert!(w.changed_since_accepted().unwrap().is_some(), "unless asked against the accepted one");

        std::fs::write(&b, "b1").unwrap();
        assert!(w.changed().unwrap().is_none(), "back to the accepted set: nothing new");
        std::fs::write(&b, [0xff, 0xfe]).unwrap();
        let binary = w.changed().unwrap().unwrap();
        assert!(matches!(binary.text(1), Err(ReadError::NotText { .. })));
        assert_eq!(binary.bytes(1), [0xff, 0xfe]);
        assert!(!format!("{binary:?}").contains("b1"), "Debug shows sizes, not bytes");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A Kubernetes Secret volume: the path is a symlink into a folder that is swapped whole,
    /// and the new file may be older than the old one.
    #[test]
    fn a_swapped_symlink_is_seen_by_content() {
        let d = dir("symlink");
        let (v1, v2) = (d.join("v1"), d.join("v2"));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("tls.crt"), "new").unwrap();
        std::fs::write(v1.join("tls.crt"), "old").unwrap();
        let data = d.join("..data");
        std::os::unix::fs::symlink(&v1, &data).unwrap();
        let w = Watched::new(vec![data.join("tls.crt")]);
        w.accept(w.changed().unwrap().unwrap());
        let tmp = d.join("..data_tmp");
        std::os::unix::fs::symlink(&v2, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        assert_eq!(w.changed().unwrap().unwrap().bytes(0), b"new");
        let _ = std::fs::remove_dir_all(&d);
    }
}
