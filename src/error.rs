//! The one error type. Every failure the tool can report is a variant here, and each variant
//! knows the exit code upstream uses for it.

use std::path::PathBuf;

/// Exit codes as upstream's `pilot-agent istio-iptables` uses them.
pub mod exit_code {
    pub const OK: u8 = 0;
    /// Configuration, rule generation or apply failure.
    pub const FAILURE: u8 = 1;
    /// `--run-validation` could not see its probe redirected.
    pub const VALIDATION: u8 = 126;
    /// Flag or usage error (upstream exits with -1).
    pub const USAGE: u8 = 255;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line could not be parsed (unknown flag, missing or unparsable value).
    #[error("{0}")]
    Usage(String),

    /// A value that would otherwise be copied into a rule is not what its setting means.
    #[error("invalid value {value:?} for {setting}: {reason}")]
    InvalidValue {
        /// The long flag (`--istio-inbound-ports`) or environment variable that carried it.
        setting: String,
        value: String,
        reason: String,
    },

    /// One of upstream's own configuration checks failed; the text is upstream's message.
    #[error("{0}")]
    Config(String),

    #[error("failed to load {path}: {source}", path = path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to write {path}: {source}", path = path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to write the rules to stdout: {0}")]
    Stdout(#[source] std::io::Error),

    /// Applying rules, routes or namespaces failed at run time.
    #[error("{0}")]
    Apply(String),

    /// `--run-validation` failed.
    #[error("{0}")]
    Validation(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::Validation(_) => exit_code::VALIDATION,
            Error::InvalidValue { .. }
            | Error::Config(_)
            | Error::ReadFile { .. }
            | Error::WriteFile { .. }
            | Error::Stdout(_)
            | Error::Apply(_) => exit_code::FAILURE,
        }
    }

    pub(crate) fn invalid(setting: &str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidValue { setting: setting.to_string(), value: value.to_string(), reason: reason.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
