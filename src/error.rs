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

    // ---- Side effects (`src/exec`): failures behind the netfilter seam. ----
    /// Detection found no iptables flavour whose `-save` works for a family.
    #[error("iptables binary {program} has no working kernel support and cannot be used: {source}")]
    IptablesUnusable {
        program: String,
        #[source]
        source: crate::exec::CommandError,
    },

    /// A restore that changes a family's rules failed (nothing of it, or only some tables, committed).
    #[error("{program} restore of the {family} rules failed: {source}")]
    RestoreFailed {
        program: String,
        family: &'static str,
        #[source]
        source: crate::exec::CommandError,
    },

    /// The `::6` address or the TPROXY policy routing could not be set up.
    #[error("failed to configure routes: {0}")]
    Routes(#[source] crate::exec::RouteError),

    /// `--native-nftables` without an `nft` on `PATH`. Upstream's text first (logs are
    /// searched for it), then what to do about it (#57978).
    #[error(
        "nativeNftables is enabled, but the nft binary is missing {}: could not find nftables binary: \
         exec: \"nft\": executable file not found in $PATH; install the nftables package \
         (nft v1.0.1 or later) in {}, or run without --native-nftables",
        if *cni_mode { "on the host filesystem" } else { "in the sidecar container image" },
        if *cni_mode { "the node" } else { "the image" }
    )]
    NftMissing { cni_mode: bool },

    /// `nft` could not be started, or its output not read.
    #[error("could not run nftables command: {command}: {source}")]
    NftSpawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// knftables refuses versions before 1.0.1 (older nft mishandles parts of the syntax used).
    #[error("nft version must be v1.0.1 or later (got {version})")]
    NftTooOld { version: String },

    /// `nft --check` refused a no-op transaction: no nf_tables, or no CAP_NET_ADMIN. The text
    /// is nft's stderr (or its exit status when it printed nothing).
    #[error("could not run nftables command: {output}")]
    NftProbe { output: String },

    /// The transaction was refused; nothing of it was committed. The text is nft's stderr.
    #[error("nftables run failed: {output}")]
    NftCommit { output: String },

    #[error("failed to open network namespace {path}: {source}", path = path.display())]
    NetnsOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to enter network namespace {path}: {source}", path = path.display())]
    NetnsEnter {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
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
            Error::IptablesUnusable { .. }
            | Error::RestoreFailed { .. }
            | Error::Routes(_)
            | Error::NftMissing { .. }
            | Error::NftSpawn { .. }
            | Error::NftTooOld { .. }
            | Error::NftProbe { .. }
            | Error::NftCommit { .. }
            | Error::NetnsOpen { .. }
            | Error::NetnsEnter { .. } => exit_code::FAILURE,
        }
    }

    pub(crate) fn invalid(setting: &str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidValue { setting: setting.to_string(), value: value.to_string(), reason: reason.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
