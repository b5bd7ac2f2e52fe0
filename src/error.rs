//! The one error type. Every failure the tool can report is a variant here (or a typed error one
//! wraps), each keeps its cause as `#[source]`, and each knows the exit code upstream uses for it.
//! The text a person sees is rendered once, by `main`, from `Display`.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::gocompat::{DurationError, ParseBoolError, ParseIntError, ParseUintError, PrefixError};
use crate::validation::ProbeError;

/// Exit codes as upstream's `pilot-agent istio-iptables` uses them.
pub mod exit_code {
    pub const OK: u8 = 0;
    /// Configuration, rule generation or apply failure.
    pub const FAILURE: u8 = 1;
    /// `--run-validation` could not see its probe redirected.
    pub const VALIDATION: u8 = 126;
    /// `istio-iptables check` (an extension): the namespace's Istio rules differ from the
    /// configuration's; the differences are on stdout.
    pub const DRIFT: u8 = 3;
    /// Flag or usage error (upstream exits with -1).
    pub const USAGE: u8 = 255;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line could not be parsed (unknown flag, missing or unparsable value).
    #[error(transparent)]
    Usage(#[from] UsageError),

    /// A value that would otherwise be copied into a rule is not what its setting means.
    #[error("invalid value {value:?} for {setting}: {reason}")]
    InvalidValue {
        /// The long flag (`--istio-inbound-ports`) or environment variable that carried it.
        setting: String,
        value: String,
        #[source]
        reason: ValueError,
    },

    /// One of upstream's own configuration checks failed, or the host cannot support the
    /// configuration; the text is upstream's message.
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("failed to load {path}: {source}", path = path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: ReadError,
    },

    #[error("failed to write {path}: {source}", path = path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to write the rules to stdout: {0}")]
    Stdout(#[source] std::io::Error),

    /// `--run-validation` failed: upstream's message, whatever the probe's reason.
    #[error("{}", crate::validation::FAILURE_MESSAGE)]
    Validation(#[source] ProbeError),

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

    /// `check` could not read the policy routing back.
    #[error("failed to read the routes: {0}")]
    RouteRead(#[source] crate::exec::RouteReadError),

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

    /// The process cannot change netfilter or routing in its network namespace.
    #[error(
        "missing {missing}: programming the pod's network namespace needs CAP_NET_ADMIN and CAP_NET_RAW; \
         add them to the init container (securityContext: capabilities: add: [NET_ADMIN, NET_RAW]) or run as root \
         with them"
    )]
    MissingCapabilities { missing: String },

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

    /// The netlink nf_tables batch was refused, or the tables could not be read back.
    #[error("native nftables apply failed: {0}")]
    NftNetlink(#[source] crate::nftnl::NftnlError),

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

    // ---- The per-namespace run lock (`src/netns_lock.rs`). ----
    #[error("cannot form the lock address @{name}: {source}")]
    LockAddress {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot take the lock @{name} of {namespace}: {source}")]
    LockBind {
        name: &'static str,
        namespace: String,
        #[source]
        source: std::io::Error,
    },

    /// Another run kept the namespace's lock for longer than this run would wait.
    #[error(
        "{holder} holds the lock @{name} of {namespace} (another istio-iptables or the Istio CNI plugin \
         programming this pod); gave up after {waited} (set {env} to wait longer)"
    )]
    LockTimeout { holder: String, name: &'static str, namespace: String, waited: String, env: &'static str },

    /// `check` found the namespace's Istio rules different from what the configuration
    /// installs. Not a failure to run: an outcome, with its own exit code.
    #[error(
        "the namespace's Istio rules differ from this configuration ({differences} differences, listed on stdout)"
    )]
    Drift { differences: usize },
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
            | Error::Stdout(_) => exit_code::FAILURE,
            Error::IptablesUnusable { .. }
            | Error::RestoreFailed { .. }
            | Error::Routes(_)
            | Error::RouteRead(_)
            | Error::NftMissing { .. }
            | Error::MissingCapabilities { .. }
            | Error::NftSpawn { .. }
            | Error::NftTooOld { .. }
            | Error::NftProbe { .. }
            | Error::NftCommit { .. }
            | Error::NftNetlink(_)
            | Error::NetnsOpen { .. }
            | Error::NetnsEnter { .. }
            | Error::LockAddress { .. }
            | Error::LockBind { .. }
            | Error::LockTimeout { .. } => exit_code::FAILURE,
            Error::Drift { .. } => exit_code::DRIFT,
        }
    }

    /// A value that is not what its setting means; `reason` says what was expected.
    pub(crate) fn invalid(setting: &str, value: &str, reason: impl Into<ValueError>) -> Self {
        Error::InvalidValue { setting: setting.to_string(), value: value.to_string(), reason: reason.into() }
    }
}

/// pflag's command-line errors, worded as pflag words them.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    #[error("unknown shorthand flag: '{short}' in {arg}")]
    UnknownShorthand { short: char, arg: String },
    #[error("flag needs an argument: {0}")]
    NeedsArgument(String),
    #[error("invalid argument {value:?} for \"{flag}\" flag: {source}")]
    InvalidArgument {
        value: String,
        /// `-p, --envoy-port` or `--probe-timeout`, as pflag names a flag.
        flag: String,
        #[source]
        source: FlagValueError,
    },
    #[error("invalid output level '{0}'")]
    InvalidOutputLevel(String),
    /// A bare word where a subcommand goes (see `subcommand::take`).
    #[error("unknown command {word:?}{}", suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownCommand { word: String, suggestion: Option<&'static str> },
    /// Any other parser error, as the first line of clap's own message.
    #[error("{}", first_line(.0))]
    Parser(#[source] clap::Error),
}

fn first_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string()
}

/// Why a typed flag's command-line value does not parse (Go's message).
#[derive(Debug, thiserror::Error)]
pub enum FlagValueError {
    #[error(transparent)]
    Bool(#[from] ParseBoolError),
    #[error(transparent)]
    Uint(#[from] ParseUintError),
    #[error(transparent)]
    Int(#[from] ParseIntError),
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// Why a value is not what its setting means.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The value is not of the expected shape; the text says what is expected.
    #[error("{0}")]
    Expected(&'static str),
    /// A CIDR that Go's `netip.ParsePrefix` rejects, with Go's message.
    #[error(transparent)]
    Prefix(Box<PrefixError>),
}

impl From<PrefixError> for ValueError {
    fn from(err: PrefixError) -> Self {
        ValueError::Prefix(Box::new(err))
    }
}

impl From<&'static str> for ValueError {
    fn from(expected: &'static str) -> Self {
        ValueError::Expected(expected)
    }
}

/// Upstream's own configuration checks, and host facts the configuration cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid FORCE_IPTABLES_BINARY value {0:?}")]
    ForceIptablesBinary(String),
    #[error(
        "number of owner groups whose outgoing traffic should be redirected to Envoy cannot exceed {limit}, got {count}: [{listed}]"
    )]
    TooManyOwnerGroups { limit: usize, count: usize, listed: String },
    #[error("invalid value for OUTBOUND_IP_RANGES_EXCLUDE")]
    ExcludeWildcard,
    #[error("failed to parse CIDR {raw}: {source}")]
    LoopbackCidrSyntax {
        raw: String,
        #[source]
        source: Box<PrefixError>,
    },
    #[error("expected valid IPv4 loopback address in CIDR {raw}; found {found}")]
    LoopbackCidrNotLoopback { raw: String, found: IpAddr },
    #[error("expected CIDR {raw} to have mask in range [8, 32]; found {prefix_len}")]
    LoopbackCidrMask { raw: String, prefix_len: u8 },
    #[error("no valid local IP address found")]
    NoValidLocalAddress,
    #[error("failed to list interface addresses: {0}")]
    ListAddresses(#[source] nix::Error),
}

/// Why a host file (resolv.conf, `/etc/passwd`, `/etc/group`) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A FIFO, device or directory: reading it could block forever or never end.
    #[error("not a regular file ({0})")]
    NotRegularFile(&'static str),
    #[error("larger than the {limit}-byte limit for host files")]
    TooLarge { limit: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_has_its_exit_code() {
        let usage: Error = UsageError::UnknownFlag("--foo".into()).into();
        assert_eq!((usage.exit_code(), usage.to_string()), (255, "unknown flag: --foo".to_string()));
        let config: Error = ConfigError::ExcludeWildcard.into();
        assert_eq!(config.exit_code(), 1);
        assert_eq!(Error::Validation(ProbeError::Timeout).exit_code(), 126);
        let invalid = Error::invalid("--envoy-port", "x", "expected a port");
        assert_eq!(invalid.to_string(), "invalid value \"x\" for --envoy-port: expected a port");
        assert_eq!(invalid.exit_code(), 1);
    }

    #[test]
    fn sources_are_kept() {
        use std::error::Error as _;
        let read = Error::ReadFile {
            path: "/etc/resolv.conf".into(),
            source: ReadError::Io(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        assert!(read.source().is_some());
        assert!(read.to_string().starts_with("failed to load /etc/resolv.conf: "), "{read}");
        let validation = Error::Validation(ProbeError::Timeout);
        assert_eq!(validation.source().map(ToString::to_string), Some("validation timeout".to_string()));
    }
}
