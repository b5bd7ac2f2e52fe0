//! A drop-in replacement for Istio's `istio-iptables`.
//!
//! The crate is a pipeline, one module per stage:
//! [`cli`] (argv + environment) → [`config`] (typed, validated) → [`plan`] (ordered rules per
//! table and chain, per IP family) → [`render`] (iptables-restore text, nft transaction) →
//! [`exec`] (dry-run printer or real apply).

pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod gocompat;
pub mod host;
pub mod logging;
pub mod plan;
pub mod render;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use cli::{FlagId, Parsed};
use config::{Config, HostPaths};
pub use error::{Error, Result};

/// Runs the tool: parse, load the configuration, then print or apply the rules.
pub fn run<I, T>(argv: I, env: &BTreeMap<String, String>, stdout: &mut dyn Write) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let flags = match cli::parse(argv, env)? {
        Parsed::Run(flags) => flags,
        Parsed::Help(text) | Parsed::Version(text) => {
            return stdout.write_all(text.as_bytes()).map_err(Error::Stdout);
        }
    };
    let level = logging::parse_output_level(flags.string(FlagId::LogOutputLevel))?;
    logging::init(level, flags.bool(FlagId::LogAsJson));
    // Entered before the configuration is loaded: IPv6 detection reads the pod's addresses.
    // A dry run changes nothing, so it stays where it was started (and needs no privilege).
    let network_namespace = flags.string(FlagId::NetworkNamespace);
    if !network_namespace.is_empty() && !flags.bool(FlagId::DryRun) {
        exec::netns::enter(std::path::Path::new(network_namespace))?;
    }
    let config = Config::load(&flags, env, &HostPaths::default())?;
    exec::execute(&config, stdout)
}

/// The process environment as the configuration stage reads it (non-UTF-8 values are kept
/// lossily, and then rejected by validation wherever they would reach a rule).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}
