//! `istio-iptables doctor [--output text|json] [run flags]`: what this namespace and kernel
//! offer, read-only.
//!
//! In the target namespace (`--network-namespace`, else the current one) it only reads: which
//! iptables programs are installed and their versions, which variant's tables hold rules
//! (`/proc/net/ip*_tables_names`, a netlink table dump, `-save`), the IPv6 decision, and the
//! backend a run would pick, by the run's own read-only detection. Whether the kernel can do
//! what a capture needs (nat/mangle/raw, REDIRECT, TPROXY, owner match, conntrack zones,
//! nf_tables `inet`) is probed by writing rules, so that happens in a throwaway namespace
//! (`probe`), never in the target one, where a legacy write would prime detection.

mod output;
mod probe;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use crate::cli::{self, Parsed};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::iptables::{kernel_lists_no_tables, Runner, Variant};
use crate::exec::journal::IptablesChoice;
use crate::exec::CommandError;
use crate::host::{HostFacts, HostPaths};
use crate::plan::{Family, Plan};

pub use probe::{FeatureProbe, ProbeSetupError, Probes};

/// One iptables program family member: installed where, and its `--version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// `iptables-legacy`, `ip6tables-nft`, ...
    pub name: String,
    pub family: Family,
    pub(crate) variant: Variant,
    /// Whether `-save` and `-restore` are installed too.
    pub save_and_restore: bool,
    /// `--version`'s first line, or `None` when the program is not installed.
    pub version: Option<String>,
}

/// Whether a variant's tables hold rules in the target namespace.
#[derive(Debug)]
pub struct Holding {
    pub program: String,
    pub family: Family,
    /// `Ok(n)`: `n` rules (`-A` lines); `Err`: the `-save` that failed.
    pub rules: std::result::Result<usize, CommandError>,
}

/// Everything `doctor` found. Failures are kept as their errors and worded only in `output`.
#[derive(Debug)]
pub struct Findings {
    pub programs: Vec<Program>,
    pub holdings: Vec<Holding>,
    /// The backend a run would use: per family for iptables, or native nftables.
    pub detection: Detection,
    /// The IPv6 decision, or why the configuration (which makes it) could not be built.
    pub ipv6: std::result::Result<crate::report::Ipv6, Error>,
    /// `/proc/sys/net/ipv6/conf/all/disable_ipv6`.
    pub ipv6_disabled_by_sysctl: Option<bool>,
    pub probes: std::result::Result<Probes, ProbeSetupError>,
}

#[derive(Debug)]
pub enum Detection {
    NativeNftables,
    Iptables(Vec<(Family, Result<IptablesChoice>)>),
}

/// Runs `doctor` with argv (program name first, the `doctor` word removed).
pub fn run(argv: Vec<OsString>, env: &BTreeMap<String, String>, stdout: &mut dyn Write) -> Result<()> {
    // A bad --output is reported once logging is up, like any other failure of a run.
    let (run_argv, json) = match split_output_flag(argv.clone()) {
        Ok((run_argv, json)) => (run_argv, Ok(json)),
        Err(err) => (argv.into_iter().take(1).collect(), Err(err)),
    };
    let flags = match cli::parse(run_argv, env)? {
        Parsed::Run(flags) => flags,
        Parsed::Help(text) | Parsed::Version(text) => return stdout.write_all(text.as_bytes()).map_err(Error::Stdout),
    };
    let level = crate::logging::parse_output_level(&flags.log_output_level.value)?;
    crate::logging::init(level, flags.log_as_json.value);
    let json = json?;
    let namespace = &flags.network_namespace.value;
    if !namespace.is_empty() {
        crate::exec::netns::enter(std::path::Path::new(namespace))?;
    }
    let config = HostFacts::read(&Config::host_needs(&flags, env), &HostPaths::default())
        .and_then(|host| Config::build(&flags, env, &host));
    let findings = examine(&flags, env, config);
    let text = if json { output::json(&findings) } else { output::text(&findings) };
    stdout.write_all(text.as_bytes()).map_err(Error::Stdout)
}

/// Takes `--output text|json` (or `--output=…`) out of argv; the rest are run flags.
fn split_output_flag(argv: Vec<OsString>) -> Result<(Vec<OsString>, bool)> {
    let (run, own) = crate::subcommand::split_own_flags(argv, &["output"]);
    let output = own.into_iter().last().map(|(_, value)| value.unwrap_or_default());
    match output.as_deref() {
        None | Some("text") => Ok((run, false)),
        Some("json") => Ok((run, true)),
        Some(other) => Err(Error::invalid("--output", other, "expected text or json")),
    }
}

const VARIANTS: [(Family, Variant, &str); 4] = [
    (Family::V4, Variant::Legacy, "iptables-legacy"),
    (Family::V4, Variant::Nft, "iptables-nft"),
    (Family::V6, Variant::Legacy, "ip6tables-legacy"),
    (Family::V6, Variant::Nft, "ip6tables-nft"),
];

fn examine(flags: &cli::Flags, env: &BTreeMap<String, String>, config: Result<Config>) -> Findings {
    let runner = Runner::default();
    let programs: Vec<Program> = VARIANTS
        .iter()
        .map(|&(family, variant, name)| {
            let version = installed(name)
                .then(|| runner.run(name, &["--version"], None, None).unwrap_or_else(|e| e.xtables_text()))
                .map(|out| out.lines().next().unwrap_or_default().trim().to_string());
            let save_and_restore = installed(&format!("{name}-save")) && installed(&format!("{name}-restore"));
            Program { name: name.to_string(), family, variant, save_and_restore, version }
        })
        .collect();
    let holdings = programs.iter().filter(|p| p.save_and_restore).map(|p| holding(&runner, p)).collect();
    let native = config.as_ref().map(|c| c.native_nftables).unwrap_or(flags.native_nftables.value);
    let detection = if native {
        Detection::NativeNftables
    } else {
        let forced = config.as_ref().ok().and_then(|c| c.force_iptables_binary);
        let ipv6 = config.as_ref().map(|c| c.enable_ipv6).unwrap_or(false);
        let families: &[Family] = if ipv6 { &[Family::V4, Family::V6] } else { &[Family::V4] };
        Detection::Iptables(
            families.iter().map(|&family| (family, crate::exec::iptables::detect_only(family, forced))).collect(),
        )
    };
    let ipv6 = config.map(|c| crate::report::ipv6(flags, &c));
    let ipv6_disabled_by_sysctl =
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").ok().map(|value| value.trim() == "1");
    let variants =
        programs.iter().filter(|p| p.save_and_restore).map(|p| (p.name.clone(), p.variant, p.family)).collect();
    let plan = config_plan(flags, env);
    let probes = probe::run(variants, plan);
    Findings { programs, holdings, detection, ipv6, ipv6_disabled_by_sysctl, probes }
}

/// The plan whose native nftables ruleset the probe commits: this configuration's, with IPv6
/// on so that both families' rules are tried (a configuration that does not load yields none).
fn config_plan(flags: &cli::Flags, env: &BTreeMap<String, String>) -> Option<Plan> {
    let mut flags = flags.clone();
    flags.enable_inbound_ipv6.value = Some(true);
    let host = HostFacts::read(&Config::host_needs(&flags, env), &HostPaths::default()).ok()?;
    Config::build(&flags, env, &host).ok().map(|config| Plan::build(&config))
}

/// Reads a variant's rules in the target namespace, without creating anything: a variant with
/// no table listed is empty, otherwise its `-save` is counted.
fn holding(runner: &Runner, program: &Program) -> Holding {
    let rules = if kernel_lists_no_tables(program.family, program.variant) {
        Ok(0)
    } else {
        runner
            .run(&format!("{}-save", program.name), &[], None, None)
            .map(|saved| saved.lines().filter(|line| line.starts_with("-A ")).count())
    };
    Holding { program: program.name.clone(), family: program.family, rules }
}

/// Whether `program` is an executable file in a `PATH` directory.
fn installed(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;
    use crate::exec::journal::Evidence;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("istio-iptables").chain(args.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn output_is_taken_out_and_run_flags_keep_their_values() {
        let (run, json) = split_output_flag(argv(&["-p", "--output", "--output", "json", "-z", "1"])).unwrap();
        assert!(json);
        assert_eq!(run, argv(&["-p", "--output", "-z", "1"]));
        let (_, json) = split_output_flag(argv(&["--output=text"])).unwrap();
        assert!(!json);
        let err = split_output_flag(argv(&["--output=yaml"])).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("--output"), "{err}");
    }

    fn findings() -> Findings {
        let choice = IptablesChoice {
            family: Family::V4,
            program: "iptables-legacy".into(),
            variant: "legacy",
            evidence: Evidence::LegacyHoldsRules,
        };
        Findings {
            programs: vec![Program {
                name: "iptables-legacy".into(),
                family: Family::V4,
                variant: Variant::Legacy,
                save_and_restore: true,
                version: Some("iptables v1.8.9 (legacy)".into()),
            }],
            holdings: vec![Holding { program: "iptables-legacy".into(), family: Family::V4, rules: Ok(18) }],
            detection: Detection::Iptables(vec![
                (Family::V4, Ok(choice)),
                (Family::V6, Err(ConfigError::ForceIptablesBinary("ip7tables".into()).into())),
            ]),
            ipv6: Err(ConfigError::NoValidLocalAddress.into()),
            ipv6_disabled_by_sysctl: Some(false),
            probes: Ok(Probes {
                iptables: vec![FeatureProbe {
                    program: "iptables-legacy".into(),
                    family: Family::V4,
                    feature: "TPROXY",
                    failure: Some("iptables-restore: line 4 failed\n".into()),
                }],
                nftables_inet: Some(None),
            }),
        }
    }

    #[test]
    fn failures_keep_their_source_errors() {
        use std::error::Error as _;
        let findings = Findings { probes: Err(ProbeSetupError::Unshare(nix::Error::EPERM)), ..findings() };
        let probe_source = findings.probes.as_ref().err().and_then(|e| e.source()).map(ToString::to_string);
        assert_eq!(probe_source.as_deref(), Some("EPERM: Operation not permitted"));
        assert!(matches!(findings.ipv6, Err(Error::Config(ConfigError::NoValidLocalAddress))));
    }

    #[test]
    fn json_output_is_one_object_with_every_finding() {
        let text = output::json(&findings());
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(json["programs"][0]["version"], "iptables v1.8.9 (legacy)");
        assert_eq!(json["rules"][0]["rules"], 18);
        assert_eq!(json["detection"]["families"][0]["choice"]["evidence"], "legacy tables hold rules");
        assert_eq!(
            json["detection"]["families"][1]["choice"]["error"],
            "invalid FORCE_IPTABLES_BINARY value \"ip7tables\""
        );
        assert_eq!(json["ipv6"]["error"], "no valid local IP address found");
        assert_eq!(json["probes"]["iptables"][0]["result"]["usable"], false);
        assert_eq!(json["probes"]["iptables"][0]["result"]["error"], "iptables-restore: line 4 failed");
        assert_eq!(json["probes"]["nftables_inet"]["usable"], true);
    }

    #[test]
    fn text_output_says_what_a_run_would_use_and_what_is_missing() {
        let text = output::text(&findings());
        assert!(text.contains("  ipv4               iptables-legacy (legacy tables hold rules)\n"), "{text}");
        assert!(text.contains("TPROXY           NOT usable: iptables-restore: line 4 failed\n"), "{text}");
        assert!(text.contains("iptables-legacy    18 rules\n"), "{text}");
        let unprobed = Findings { probes: Err(ProbeSetupError::Unshare(nix::Error::EPERM)), ..findings() };
        let text = output::text(&unprobed);
        assert!(
            text.contains(
                "not probed: cannot create a throwaway network namespace to probe in: EPERM: Operation not permitted\n"
            ),
            "{text}"
        );
        assert!(text.contains("no working iptables: invalid FORCE_IPTABLES_BINARY value \"ip7tables\"\n"), "{text}");
        assert!(text.contains("undecided: no valid local IP address found\n"), "{text}");
    }
}
