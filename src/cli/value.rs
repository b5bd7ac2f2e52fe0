//! The typed side of a flag: the Rust types a flag row can resolve into ([`FlagValue`]), with
//! pflag's strict command-line parse and upstream's lenient environment parse, and the resolved
//! [`Setting`] that remembers where its value came from.

use std::time::Duration;

use super::{FlagDef, Kind};
use crate::error::FlagValueError;
use crate::gocompat::{self, ParseBoolError, ParseIntError};

/// A Rust type a flag can resolve into; it fixes the flag's [`Kind`] and its parsers.
pub trait FlagValue: Sized {
    const KIND: Kind;
    /// pflag's strict parse of a command-line value (also used for the default).
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError>;
    /// Upstream's lenient parse of an environment value; `None` ignores the variable.
    fn from_env(raw: &str) -> Option<Self>;
    /// The value when neither the command line nor the environment sets the flag.
    fn unset(default: &str) -> Result<Self, FlagValueError> {
        Self::from_command_line(default)
    }
}

impl FlagValue for String {
    const KIND: Kind = Kind::Str;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        Ok(raw.to_string())
    }
    fn from_env(raw: &str) -> Option<Self> {
        Some(raw.to_string())
    }
}

fn go_bool(raw: &str) -> Result<bool, FlagValueError> {
    gocompat::parse_go_bool(raw).ok_or_else(|| ParseBoolError { input: raw.to_string() }.into())
}

impl FlagValue for bool {
    const KIND: Kind = Kind::Bool;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        go_bool(raw)
    }
    /// pflag stores `false` for an unparsable environment value.
    fn from_env(raw: &str) -> Option<Self> {
        Some(gocompat::env_bool(raw))
    }
}

/// Our `--enable-inbound-ipv6` extension: unset means "detect".
impl FlagValue for Option<bool> {
    const KIND: Kind = Kind::OptionalBool;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        go_bool(raw).map(Some)
    }
    /// An unparsable value is ignored, so detection runs.
    fn from_env(raw: &str) -> Option<Self> {
        gocompat::parse_go_bool(raw).map(Some)
    }
    fn unset(_default: &str) -> Result<Self, FlagValueError> {
        Ok(None)
    }
}

impl FlagValue for u16 {
    const KIND: Kind = Kind::U16;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        Ok(gocompat::parse_go_u16(raw)?)
    }
    /// pflag keeps what ParseUint returned with its error: 0 for syntax, 65535 for range.
    fn from_env(raw: &str) -> Option<Self> {
        Some(gocompat::env_u16(raw))
    }
}

impl FlagValue for i64 {
    const KIND: Kind = Kind::Int;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        raw.parse().map_err(|_| ParseIntError { input: raw.to_string() }.into())
    }
    fn from_env(raw: &str) -> Option<Self> {
        Some(raw.parse().unwrap_or(0))
    }
}

impl FlagValue for Duration {
    const KIND: Kind = Kind::Duration;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        Ok(gocompat::parse_go_duration(raw)?)
    }
    /// pflag stores 0 for an unparsable duration.
    fn from_env(raw: &str) -> Option<Self> {
        Some(gocompat::env_duration(raw))
    }
}

/// A deadline (our `--command-timeout`, `--lock-timeout`): a Go duration the configuration
/// requires to be positive. Go's parser accepts `-1s` (read as zero) and the environment takes
/// any text, so the raw value is kept for the configuration's error to show as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    pub raw: String,
    /// `None` for an environment value that is no duration at all.
    pub parsed: Option<Duration>,
}

impl FlagValue for Deadline {
    const KIND: Kind = Kind::Duration;
    fn from_command_line(raw: &str) -> Result<Self, FlagValueError> {
        Ok(Deadline { raw: raw.to_string(), parsed: Some(gocompat::parse_go_duration(raw)?) })
    }
    /// Unlike upstream's durations, an unparsable value is not read as 0 and ignored: it is kept
    /// for the configuration to refuse.
    fn from_env(raw: &str) -> Option<Self> {
        Some(Deadline { raw: raw.to_string(), parsed: gocompat::parse_go_duration(raw).ok() })
    }
}

/// Where a resolved value came from; the config stage names it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Env(&'static str),
    Default,
}

/// One flag's resolved value and where it came from.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
    pub(super) def: &'static FlagDef,
}

impl<T> Setting<T> {
    /// The name to put in an error about this value: the variable it came from, or the long flag.
    pub fn name(&self) -> String {
        match self.source {
            Source::Env(name) => name.to_string(),
            _ => format!("--{}", self.def.long),
        }
    }

    pub fn def(&self) -> &'static FlagDef {
        self.def
    }
}

impl Setting<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}
