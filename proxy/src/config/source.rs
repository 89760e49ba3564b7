//! Where the config comes from: a YAML file or the embedded default.

use std::path::PathBuf;
use vane_route::{Config, ConfigError, Table};

/// Where the config comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A YAML file, watched for changes.
    File(PathBuf),
    /// The embedded default (`examples/demo.yaml`).
    Embedded,
}

/// The embedded default config.
pub const EMBEDDED: &str = include_str!("../../../examples/demo.yaml");

impl Source {
    /// Reads the config text.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Source::File(p) => std::fs::read_to_string(p),
            Source::Embedded => Ok(EMBEDDED.to_string()),
        }
    }

    /// Reads and validates (the routing table and the process settings).
    pub fn load(&self) -> Result<Table, LoadError> {
        Ok(super::process::compile(self.read_config()?)?)
    }

    /// Reads and parses, without validating.
    pub fn read_config(&self) -> Result<Config, LoadError> {
        let text = self.read().map_err(|e| LoadError::Read(self.to_string(), e))?;
        Config::from_yaml(&text).map_err(|e| LoadError::Invalid(ConfigError::Parse(e)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => write!(f, "<embedded default>"),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// The config is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}
