//! A drop-in replacement for Istio's `istio-iptables`.
//!
//! The crate is a pipeline, one module per stage:
//! [`cli`] (argv + environment) → [`config`] (typed, validated) → [`plan`] (ordered rules per
//! table and chain, per IP family) → [`render`] (iptables-restore text, nft transaction) →
//! [`exec`] (dry-run printer or real apply) → [`validation`] (optional: prove the capture works).

mod capabilities;
pub mod chains;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod gocompat;
pub mod host;
pub mod logging;
pub mod netns_lock;
pub mod nftnl;
pub mod plan;
pub mod render;
pub mod report;
pub mod subcommand;
pub mod validation;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use cli::Parsed;
use config::Config;
pub use error::{Error, Result};
use host::{HostFacts, HostPaths};
use subcommand::Subcommand;

/// Runs the tool: parse, load the configuration, then print or apply the rules.
pub fn run<I, T>(argv: I, env: &BTreeMap<String, String>, stdout: &mut dyn Write) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let subcommand = subcommand::take(&mut argv)?;
    match subcommand {
        Some(Subcommand::Explain) => return explain::run(argv, env, stdout),
        Some(Subcommand::Doctor) => return doctor::run(argv, env, stdout),
        Some(Subcommand::Check) | None => {}
    }
    let mut flags = match cli::parse(argv, env)? {
        Parsed::Run(flags) => flags,
        Parsed::Help(text) | Parsed::Version(text) => {
            return stdout.write_all(text.as_bytes()).map_err(Error::Stdout);
        }
    };
    if subcommand == Some(Subcommand::Check) {
        // Read-only whatever `--dry-run` says, and always about the live namespace (which a
        // dry run would not enter). No lock, no rule stage, no validation.
        flags.dry_run.value = false;
        let config = configure(&flags, env)?;
        return exec::check(&config, stdout);
    }
    // A fresh journal: a caller (a test) may run twice on one thread.
    exec::journal::take();
    let started = std::time::Instant::now();
    let mut config = None;
    let result = run_configured(&flags, env, stdout, &mut config);
    let report_path = &flags.report.value;
    if !report_path.is_empty() {
        let journal = exec::journal::take();
        let report = report::RunReport::new(&flags, config.as_ref(), &result, journal, started.elapsed());
        // The report describes the run; failing to write it does not change the run's outcome
        // (a pod whose rules are in place must not stay in Init over a diagnostic file).
        if let Err(e) = report::write_report(std::path::Path::new(report_path), &report.to_json()) {
            tracing::warn!("could not write the run report to {report_path}: {e}");
        }
    }
    result
}

/// A run after parsing; `config` holds the configuration once it is built (for the report).
fn run_configured(
    flags: &cli::Flags,
    env: &BTreeMap<String, String>,
    stdout: &mut dyn Write,
    config: &mut Option<Config>,
) -> Result<()> {
    let config = config.insert(configure(flags, env)?);
    // Validation follows a successful rule stage, or stands alone with --skip-rule-apply (the
    // CNI `istio-validation` container); a failed rule stage never reaches it.
    // One run at a time per network namespace, from reading the state to the last route; a
    // dry run or validation alone changes nothing and does not wait.
    if !config.dry_run && !config.skip_rule_apply {
        capabilities::check_this_process()?;
    }
    let lock = (!config.dry_run && !config.skip_rule_apply)
        .then(|| netns_lock::acquire(&flags.network_namespace.value, config.lock_timeout))
        .transpose()?;
    exec::execute(config, stdout)?;
    drop(lock);
    if config.run_validation {
        validation::run(config)?;
    }
    Ok(())
}

/// What every command does before it looks at rules: logging as the flags say, the target
/// network namespace entered (not in dry-run), the host read, and the configuration built.
pub(crate) fn configure(flags: &cli::Flags, env: &BTreeMap<String, String>) -> Result<Config> {
    let level = logging::parse_output_level(&flags.log_output_level.value)?;
    logging::init(level, flags.log_as_json.value);
    // Before the host is read: IPv6 detection reads the interface addresses of the namespace it
    // runs in. A dry run changes nothing, so it stays where it is (and needs no privilege).
    let namespace = &flags.network_namespace.value;
    if !namespace.is_empty() && !flags.dry_run.value {
        exec::netns::enter(std::path::Path::new(namespace))?;
    }
    let host = HostFacts::read(&Config::host_needs(flags, env), &HostPaths::default())?;
    Config::build(flags, env, &host)
}

/// The process environment as the configuration stage reads it (non-UTF-8 values are kept
/// lossily, and then rejected by validation wherever they would reach a rule).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}
