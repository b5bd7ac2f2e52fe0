//! The command line, defined once. Every flag lives in [`FLAGS`]: its long and short names, type,
//! default, environment bindings and help. Parsing, `--help`, the man page and shell completions
//! are all derived from that table.
//!
//! Upstream is a cobra/pflag command, so this module reproduces pflag's syntax (`--f v`, `--f=v`,
//! `-f v`, `-fv`, `-f=v`, attached-only boolean values, last occurrence wins, positionals ignored)
//! and its environment binding: environment values are applied before the command line, and an
//! "additional" variable overrides the derived one.

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::error::{Error, Result};
use crate::gocompat;

/// Identifies a flag; the resolved values are indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlagId {
    EnvoyPort,
    InboundCapturePort,
    InboundTunnelPort,
    ProxyUid,
    ProxyGid,
    InterceptionMode,
    InboundPorts,
    LocalExcludePorts,
    ExcludeInterfaces,
    ServiceCidr,
    ServiceExcludeCidr,
    OutboundPorts,
    LocalOutboundPortsExclude,
    KubeVirtInterfaces,
    TproxyMark,
    TproxyRouteTable,
    DryRun,
    ProbePort,
    ProbeTimeout,
    SkipRuleApply,
    RunValidation,
    RedirectDns,
    DropInvalid,
    DualStack,
    CaptureAllDns,
    NetworkNamespace,
    CniMode,
    Reconcile,
    CleanupOnly,
    ForceApply,
    NativeNftables,
    ForceIptablesBinary,
    // Extensions (not upstream).
    EnableInboundIpv6,
    ResolvConf,
    // Istio's logging flags, accepted because the injected init container passes them.
    LogOutputLevel,
    LogAsJson,
    LogCaller,
    LogStacktraceLevel,
    LogTarget,
    LogRotate,
    LogRotateMaxAge,
    LogRotateMaxSize,
    LogRotateMaxBackups,
    Vklog,
}

/// How a flag's value is parsed, on the command line and from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Taken verbatim (checked later by the config stage).
    Str,
    /// Go `strconv.ParseBool`; given alone it means true, a value must be attached with `=`.
    Bool,
    /// Like `Bool` but with no default: unset means "decide at run time".
    OptionalBool,
    /// pflag uint16.
    U16,
    /// pflag int.
    Int,
    /// Go `time.Duration` syntax.
    Duration,
}

/// Which group a flag belongs to in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Upstream,
    Extension,
    Logging,
}

pub struct FlagDef {
    pub id: FlagId,
    pub long: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: &'static str,
    /// The variable bound to the flag (derived from the long name, except `envoy-port`: none).
    pub env: Option<&'static str>,
    /// A second variable that overrides `env` when present.
    pub additional_env: Option<&'static str>,
    pub group: Group,
    pub help: &'static str,
}

const fn flag(
    id: FlagId,
    long: &'static str,
    short: Option<char>,
    kind: Kind,
    default: &'static str,
    env: Option<&'static str>,
    help: &'static str,
) -> FlagDef {
    FlagDef { id, long, short, kind, default, env, additional_env: None, group: Group::Upstream, help }
}

const fn with_additional_env(mut def: FlagDef, name: &'static str) -> FlagDef {
    def.additional_env = Some(name);
    def
}

const fn in_group(mut def: FlagDef, group: Group) -> FlagDef {
    def.group = group;
    def
}

const fn logging(id: FlagId, long: &'static str, kind: Kind, default: &'static str, help: &'static str) -> FlagDef {
    in_group(flag(id, long, None, kind, default, None, help), Group::Logging)
}

use FlagId as F;
use Kind::{Bool, Duration, Int, OptionalBool, Str, U16};

/// Every flag, in upstream's registration order (the order also decides env application).
pub static FLAGS: &[FlagDef] = &[
    flag(F::EnvoyPort, "envoy-port", Some('p'), Str, "15001", None,
        "Specify the envoy port to which redirect all TCP traffic (default $ENVOY_PORT = 15001)"),
    flag(F::InboundCapturePort, "inbound-capture-port", Some('z'), Str, "15006", Some("INBOUND_CAPTURE_PORT"),
        "Port to which all inbound TCP traffic to the pod/VM should be redirected to. For backward compatibility, by default this is the Envoy port"),
    flag(F::InboundTunnelPort, "inbound-tunnel-port", Some('e'), Str, "15008", Some("INBOUND_TUNNEL_PORT"),
        "Specify the istio tunnel port for inbound tcp traffic"),
    flag(F::ProxyUid, "proxy-uid", Some('u'), Str, "", Some("PROXY_UID"),
        "Specify the UID of the user for which the redirection is not applied. Typically, this is the UID of the proxy container"),
    flag(F::ProxyGid, "proxy-gid", Some('g'), Str, "", Some("PROXY_GID"),
        "Specify the GID of the user for which the redirection is not applied (same default value as -u param)"),
    flag(F::InterceptionMode, "istio-inbound-interception-mode", Some('m'), Str, "", Some("ISTIO_INBOUND_INTERCEPTION_MODE"),
        "The mode used to redirect inbound connections to Envoy, either \"REDIRECT\" or \"TPROXY\""),
    flag(F::InboundPorts, "istio-inbound-ports", Some('b'), Str, "", Some("ISTIO_INBOUND_PORTS"),
        "Comma separated list of inbound ports for which traffic is to be redirected to Envoy (optional). The wildcard character \"*\" can be used to configure redirection for all ports. An empty list will disable"),
    flag(F::LocalExcludePorts, "istio-local-exclude-ports", Some('d'), Str, "", Some("ISTIO_LOCAL_EXCLUDE_PORTS"),
        "Comma separated list of inbound ports to be excluded from redirection to Envoy (optional). Only applies when all inbound traffic (i.e. \"*\") is being redirected (default to $ISTIO_LOCAL_EXCLUDE_PORTS)"),
    flag(F::ExcludeInterfaces, "istio-exclude-interfaces", Some('c'), Str, "", Some("ISTIO_EXCLUDE_INTERFACES"),
        "Comma separated list of NIC (optional). Neither inbound nor outbound traffic will be captured"),
    flag(F::ServiceCidr, "istio-service-cidr", Some('i'), Str, "", Some("ISTIO_SERVICE_CIDR"),
        "Comma separated list of IP ranges in CIDR form to redirect to envoy (optional). The wildcard character \"*\" can be used to redirect all outbound traffic. An empty list will disable all outbound redirection into Envoy"),
    flag(F::ServiceExcludeCidr, "istio-service-exclude-cidr", Some('x'), Str, "", Some("ISTIO_SERVICE_EXCLUDE_CIDR"),
        "Comma separated list of IP ranges in CIDR form to be excluded from redirection. Only applies when all  outbound traffic (i.e. \"*\") is being redirected (default to $ISTIO_SERVICE_EXCLUDE_CIDR)"),
    flag(F::OutboundPorts, "istio-outbound-ports", Some('q'), Str, "", Some("ISTIO_OUTBOUND_PORTS"),
        "Comma separated list of outbound ports to be explicitly included for redirection to Envoy"),
    flag(F::LocalOutboundPortsExclude, "istio-local-outbound-ports-exclude", Some('o'), Str, "", Some("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"),
        "Comma separated list of outbound ports to be excluded from redirection to Envoy"),
    flag(F::KubeVirtInterfaces, "kube-virt-interfaces", Some('k'), Str, "", Some("KUBE_VIRT_INTERFACES"),
        "Comma separated list of virtual interfaces whose inbound traffic (from VM) will be treated as outbound"),
    flag(F::TproxyMark, "istio-inbound-tproxy-mark", Some('t'), Str, "1337", Some("ISTIO_INBOUND_TPROXY_MARK"),
        "The packet mark used by TPROXY inbound interception"),
    flag(F::TproxyRouteTable, "istio-inbound-tproxy-route-table", Some('r'), Str, "133", Some("ISTIO_INBOUND_TPROXY_ROUTE_TABLE"),
        "The policy routing table used by TPROXY inbound interception"),
    flag(F::DryRun, "dry-run", Some('n'), Bool, "false", Some("DRY_RUN"),
        "Do not call any external dependencies like iptables"),
    flag(F::ProbePort, "iptables-probe-port", None, U16, "15002", Some("IPTABLES_PROBE_PORT"),
        "Set listen port for failure detection"),
    flag(F::ProbeTimeout, "probe-timeout", None, Duration, "5s", Some("PROBE_TIMEOUT"),
        "Failure detection timeout"),
    flag(F::SkipRuleApply, "skip-rule-apply", None, Bool, "false", Some("SKIP_RULE_APPLY"),
        "Skip iptables apply"),
    flag(F::RunValidation, "run-validation", None, Bool, "false", Some("RUN_VALIDATION"),
        "Validate iptables"),
    with_additional_env(flag(F::RedirectDns, "redirect-dns", None, Bool, "false", Some("REDIRECT_DNS"),
        "Enable capture of dns traffic by istio-agent"), "ISTIO_META_DNS_CAPTURE"),
    with_additional_env(flag(F::DropInvalid, "drop-invalid", None, Bool, "false", Some("DROP_INVALID"),
        "Enable invalid drop in the iptables rules"), "INVALID_DROP"),
    with_additional_env(flag(F::DualStack, "dual-stack", None, Bool, "false", Some("DUAL_STACK"),
        "Enable ipv4/ipv6 redirects for dual-stack."), "ISTIO_DUAL_STACK"),
    flag(F::CaptureAllDns, "capture-all-dns", None, Bool, "false", Some("CAPTURE_ALL_DNS"),
        "Instead of only capturing DNS traffic to DNS server IP, capture all DNS traffic at port 53. This setting is only effective when redirect dns is enabled."),
    flag(F::NetworkNamespace, "network-namespace", None, Str, "", Some("NETWORK_NAMESPACE"),
        "The network namespace that iptables rules should be applied to."),
    flag(F::CniMode, "cni-mode", None, Bool, "false", Some("CNI_MODE"),
        "Whether to run as CNI plugin."),
    flag(F::Reconcile, "reconcile", None, Bool, "false", Some("RECONCILE"),
        "Reconcile pre-existing and incompatible iptables rules instead of failing if drift is detected."),
    flag(F::CleanupOnly, "cleanup-only", None, Bool, "false", Some("CLEANUP_ONLY"),
        "Perform a forced cleanup without creating new iptables chains or rules."),
    flag(F::ForceApply, "force-apply", None, Bool, "false", Some("FORCE_APPLY"),
        "Apply iptables changes even if they appear to already be in place."),
    flag(F::NativeNftables, "native-nftables", None, Bool, "false", Some("NATIVE_NFTABLES"),
        "Use native nftables instead of iptables rules"),
    flag(F::ForceIptablesBinary, "force-iptables-binary", None, Str, "", Some("FORCE_IPTABLES_BINARY"),
        "Break-glass: force the iptables backend, \"legacy\" or \"nft\" (empty: detect)"),
    in_group(flag(F::EnableInboundIpv6, "enable-inbound-ipv6", None, OptionalBool, "", Some("ENABLE_INBOUND_IPV6"),
        "Force IPv6 rules on (true) or off (false) instead of detecting them from the interface addresses"), Group::Extension),
    in_group(flag(F::ResolvConf, "resolv-conf", None, Str, "/etc/resolv.conf", None,
        "The resolv.conf file whose nameservers DNS capture redirects"), Group::Extension),
    logging(F::LogOutputLevel, "log_output_level", Str, "default:info",
        "Comma-separated minimum per-scope logging level of messages to output, in the form of <scope>:<level>,<scope>:<level>,... where scope can be one of [default] and level can be one of [debug, info, warn, error, fatal, none]"),
    logging(F::LogAsJson, "log_as_json", Bool, "false", "Whether to format output as JSON or in plain console-friendly format"),
    logging(F::LogCaller, "log_caller", Str, "", "Comma-separated list of scopes for which to include caller information (accepted, ignored)"),
    logging(F::LogStacktraceLevel, "log_stacktrace_level", Str, "default:none",
        "Comma-separated minimum per-scope logging level at which stack traces are captured (accepted, ignored)"),
    logging(F::LogTarget, "log_target", Str, "stdout",
        "The set of paths where to output the log (accepted; logs always go to stderr because stdout carries the rules)"),
    logging(F::LogRotate, "log_rotate", Str, "", "The path for the optional rotating log file (accepted, ignored)"),
    logging(F::LogRotateMaxAge, "log_rotate_max_age", Int, "30", "The maximum age in days of a log file beyond which the file is rotated (accepted, ignored)"),
    logging(F::LogRotateMaxSize, "log_rotate_max_size", Int, "104857600", "The maximum size in megabytes of a log file beyond which the file is rotated (accepted, ignored)"),
    logging(F::LogRotateMaxBackups, "log_rotate_max_backups", Int, "1000", "The maximum number of log file backups to keep before older files are deleted (accepted, ignored)"),
    logging(F::Vklog, "vklog", Int, "0", "number for the log level verbosity. Like -v flag. ex: --vklog=9 (accepted, ignored)"),
];

pub fn def(id: FlagId) -> &'static FlagDef {
    // FLAGS holds every FlagId exactly once (tested below), so the search always succeeds.
    FLAGS.iter().find(|d| d.id == id).unwrap_or(&FLAGS[0])
}

/// A flag's resolved value, after the command line, additional env, derived env and default.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    OptionalBool(Option<bool>),
    U16(u16),
    Int(i64),
    Duration(std::time::Duration),
}

/// Where a resolved value came from; the config stage names it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Env(&'static str),
    Default,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub value: Value,
    pub source: Source,
}

/// The outcome of parsing: either flags to run with, or text to print and leave.
#[derive(Debug)]
pub enum Parsed {
    Run(Flags),
    Help(String),
    Version(String),
}

/// All flags resolved.
#[derive(Debug, Clone)]
pub struct Flags {
    values: BTreeMap<FlagId, Resolved>,
}

impl Flags {
    fn get(&self, id: FlagId) -> &Value {
        // `parse` resolves every flag, so every id is present.
        self.values.get(&id).map(|r| &r.value).unwrap_or(&Value::Bool(false))
    }

    pub fn string(&self, id: FlagId) -> &str {
        match self.get(id) {
            Value::Str(s) => s,
            _ => "",
        }
    }

    pub fn bool(&self, id: FlagId) -> bool {
        matches!(self.get(id), Value::Bool(true))
    }

    pub fn optional_bool(&self, id: FlagId) -> Option<bool> {
        match self.get(id) {
            Value::OptionalBool(b) => *b,
            _ => None,
        }
    }

    pub fn u16(&self, id: FlagId) -> u16 {
        match self.get(id) {
            Value::U16(v) => *v,
            _ => 0,
        }
    }

    pub fn duration(&self, id: FlagId) -> std::time::Duration {
        match self.get(id) {
            Value::Duration(d) => *d,
            _ => std::time::Duration::ZERO,
        }
    }

    /// The name to put in an error about this flag's value: the variable it came from, or the
    /// long flag.
    pub fn setting_name(&self, id: FlagId) -> String {
        match self.values.get(&id).map(|r| &r.source) {
            Some(Source::Env(name)) => (*name).to_string(),
            _ => format!("--{}", def(id).long),
        }
    }
}

/// The clap model built from [`FLAGS`]; also used to render the man page and completions.
pub fn command() -> Command {
    let mut cmd = Command::new("istio-iptables")
        .about("Set up iptables (or nftables) rules to capture a pod's traffic for the Istio sidecar")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_version_flag(true)
        .args_override_self(true)
        .dont_delimit_trailing_values(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit (extension)"),
        )
        .arg(
            Arg::new("args")
                .num_args(0..)
                .action(ArgAction::Append)
                .allow_hyphen_values(false)
                .hide(true)
                .help("Ignored positional arguments (a leading istio-iptables word, for example)"),
        );
    for def in FLAGS {
        let mut arg = Arg::new(def.long).long(def.long).help(def.help).action(ArgAction::Set);
        if let Some(short) = def.short {
            arg = arg.short(short);
        }
        arg = match def.kind {
            Kind::Bool | Kind::OptionalBool => {
                arg.num_args(0..=1).require_equals(true).default_missing_value("true").value_name("BOOL")
            }
            _ => arg.num_args(1).allow_hyphen_values(true).value_name(value_name(def.kind)),
        };
        arg = match def.group {
            Group::Upstream => arg,
            Group::Extension => arg.help_heading("Extensions (not in upstream istio-iptables)"),
            Group::Logging => arg.help_heading("Logging"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

fn value_name(kind: Kind) -> &'static str {
    match kind {
        Kind::U16 | Kind::Int => "N",
        Kind::Duration => "DURATION",
        _ => "VALUE",
    }
}

/// Parses argv (program name first) with the given environment.
pub fn parse<I, T>(argv: I, env: &BTreeMap<String, String>) -> Result<Parsed>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(err) => {
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp => Ok(Parsed::Help(err.render().to_string())),
                clap::error::ErrorKind::DisplayVersion => Ok(Parsed::Version(err.render().to_string())),
                _ => Err(Error::Usage(pflag_message(&err))),
            }
        }
    };
    let mut values = BTreeMap::new();
    for def in FLAGS {
        values.insert(def.id, resolve(def, &matches, env)?);
    }
    Ok(Parsed::Run(Flags { values }))
}

fn resolve(def: &FlagDef, matches: &ArgMatches, env: &BTreeMap<String, String>) -> Result<Resolved> {
    if matches.value_source(def.long) == Some(clap::parser::ValueSource::CommandLine) {
        let raw = matches.get_one::<String>(def.long).map(String::as_str).unwrap_or_default();
        let value = parse_cli_value(def, raw)?;
        return Ok(Resolved { value, source: Source::CommandLine });
    }
    for name in [def.additional_env, def.env].into_iter().flatten() {
        if let Some(raw) = env.get(name) {
            if let Some(value) = parse_env_value(def, raw) {
                return Ok(Resolved { value, source: Source::Env(name) });
            }
        }
    }
    let value = match def.kind {
        Kind::OptionalBool => Value::OptionalBool(None),
        _ => parse_cli_value(def, def.default)?,
    };
    Ok(Resolved { value, source: Source::Default })
}

fn parse_cli_value(def: &FlagDef, raw: &str) -> Result<Value> {
    let invalid =
        |reason: String| Error::Usage(format!("invalid argument {raw:?} for \"{}\" flag: {reason}", flag_display(def)));
    Ok(match def.kind {
        Kind::Str => Value::Str(raw.to_string()),
        Kind::Bool => Value::Bool(
            gocompat::parse_go_bool(raw)
                .ok_or_else(|| invalid(format!("strconv.ParseBool: parsing {raw:?}: invalid syntax")))?,
        ),
        Kind::OptionalBool => Value::OptionalBool(Some(
            gocompat::parse_go_bool(raw)
                .ok_or_else(|| invalid(format!("strconv.ParseBool: parsing {raw:?}: invalid syntax")))?,
        )),
        Kind::U16 => Value::U16(gocompat::parse_go_u16(raw).map_err(invalid)?),
        Kind::Int => {
            Value::Int(raw.parse().map_err(|_| invalid(format!("strconv.ParseInt: parsing {raw:?}: invalid syntax")))?)
        }
        Kind::Duration => Value::Duration(gocompat::parse_go_duration(raw).map_err(invalid)?),
    })
}

/// Environment values follow upstream: a bad value still sets the flag (bool → false, uint16 →
/// 0 or 65535, duration → 0). `None` means the value is ignored and the next source is used;
/// only our `OptionalBool` extension does that, so an unparsable value falls back to detection.
fn parse_env_value(def: &FlagDef, raw: &str) -> Option<Value> {
    Some(match def.kind {
        Kind::Str => Value::Str(raw.to_string()),
        Kind::Bool => Value::Bool(gocompat::env_bool(raw)),
        Kind::OptionalBool => Value::OptionalBool(Some(gocompat::parse_go_bool(raw)?)),
        Kind::U16 => Value::U16(gocompat::env_u16(raw)),
        Kind::Int => Value::Int(raw.parse().unwrap_or(0)),
        Kind::Duration => Value::Duration(gocompat::env_duration(raw)),
    })
}

fn flag_display(def: &FlagDef) -> String {
    match def.short {
        Some(short) => format!("-{short}, --{}", def.long),
        None => format!("--{}", def.long),
    }
}

/// Turns clap's error into pflag's wording (what users of upstream grep their logs for).
fn pflag_message(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match err.kind() {
        ErrorKind::UnknownArgument => match context(ContextKind::InvalidArg) {
            Some(arg) if arg.starts_with("--") => {
                format!("unknown flag: {}", arg.split('=').next().unwrap_or(&arg))
            }
            Some(arg) => {
                let short = arg.trim_start_matches('-').chars().next().unwrap_or('-');
                format!("unknown shorthand flag: '{short}' in {arg}")
            }
            None => "unknown flag".to_string(),
        },
        ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::TooFewValues => {
            match context(ContextKind::InvalidArg) {
                Some(arg) => format!("flag needs an argument: {}", arg.split_whitespace().next().unwrap_or(&arg)),
                None => first_line(err),
            }
        }
        _ => first_line(err),
    }
}

fn first_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str], env: &[(&str, &str)]) -> Flags {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
        match parse(argv, &env).expect("parses") {
            Parsed::Run(flags) => flags,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
        match parse(argv, &BTreeMap::new()) {
            Err(Error::Usage(msg)) => msg,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn every_id_is_defined_once() {
        let mut ids: Vec<_> = FLAGS.iter().map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), FLAGS.len());
        assert_eq!(ids.last(), Some(&FlagId::Vklog));
    }

    #[test]
    fn env_names_are_derived_from_long_names_except_envoy_port() {
        for def in FLAGS.iter().filter(|d| d.group == Group::Upstream && d.id != FlagId::EnvoyPort) {
            assert_eq!(def.env, Some(def.long.to_uppercase().replace('-', "_").as_str()), "{}", def.long);
        }
        assert_eq!(def(FlagId::EnvoyPort).env, None);
    }

    #[test]
    fn pflag_value_syntax() {
        for args in [
            &["--envoy-port", "1"][..],
            &["--envoy-port=1"],
            &["-p", "1"],
            &["-p1"],
            &["-p=1"],
            &["-p", "9", "-p", "1"],
        ] {
            assert_eq!(flags(args, &[]).string(FlagId::EnvoyPort), "1", "{args:?}");
        }
        assert_eq!(flags(&["-x", ""], &[]).string(FlagId::ServiceExcludeCidr), "");
        assert_eq!(flags(&["-x", "-b"], &[]).string(FlagId::ServiceExcludeCidr), "-b");
    }

    #[test]
    fn booleans_take_attached_values_only() {
        assert!(flags(&["--dry-run"], &[]).bool(FlagId::DryRun));
        assert!(flags(&["-n"], &[]).bool(FlagId::DryRun));
        assert!(!flags(&["--dry-run=false"], &[]).bool(FlagId::DryRun));
        assert!(!flags(&["-n=F"], &[]).bool(FlagId::DryRun));
        // `false` becomes an ignored positional, as with pflag.
        assert!(flags(&["--dry-run", "false"], &[]).bool(FlagId::DryRun));
        assert!(usage_error(&["--dry-run=yes"]).contains("invalid argument \"yes\""));
    }

    #[test]
    fn positionals_and_a_leading_subcommand_word_are_ignored() {
        let f = flags(&["istio-iptables", "-p", "1", "extra", "-z", "2", "--", "-q"], &[]);
        assert_eq!(f.string(FlagId::EnvoyPort), "1");
        assert_eq!(f.string(FlagId::InboundCapturePort), "2");
        assert_eq!(f.string(FlagId::OutboundPorts), "");
    }

    #[test]
    fn env_precedence() {
        let f = flags(&[], &[("REDIRECT_DNS", "true"), ("ISTIO_META_DNS_CAPTURE", "false")]);
        assert!(!f.bool(FlagId::RedirectDns));
        let f = flags(&[], &[("REDIRECT_DNS", "true"), ("ISTIO_META_DNS_CAPTURE", "")]);
        assert!(!f.bool(FlagId::RedirectDns), "an empty additional env is an invalid bool, i.e. false");
        let f = flags(&["--redirect-dns"], &[("ISTIO_META_DNS_CAPTURE", "false")]);
        assert!(f.bool(FlagId::RedirectDns), "the command line wins");
        let f = flags(&[], &[("DROP_INVALID", "1")]);
        assert!(f.bool(FlagId::DropInvalid));
        let f = flags(&[], &[("ENVOY_PORT", "9")]);
        assert_eq!(f.string(FlagId::EnvoyPort), "15001", "ENVOY_PORT is not bound");
        let f = flags(&[], &[("ISTIO_INBOUND_TPROXY_MARK", "")]);
        assert_eq!(f.string(FlagId::TproxyMark), "");
        assert_eq!(f.setting_name(FlagId::TproxyMark), "ISTIO_INBOUND_TPROXY_MARK");
    }

    #[test]
    fn typed_env_values_follow_upstream_fallbacks() {
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "nope")]).u16(FlagId::ProbePort), 0);
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "70000")]).u16(FlagId::ProbePort), 65535);
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "0x10")]).u16(FlagId::ProbePort), 16);
        assert_eq!(flags(&[], &[("PROBE_TIMEOUT", "x")]).duration(FlagId::ProbeTimeout), std::time::Duration::ZERO);
        assert_eq!(flags(&[], &[]).duration(FlagId::ProbeTimeout), std::time::Duration::from_secs(5));
        assert!(usage_error(&["--iptables-probe-port=70000"]).contains("out of range"));
        assert!(usage_error(&["--probe-timeout=abc"]).contains("invalid argument"));
    }

    #[test]
    fn enable_inbound_ipv6_is_optional() {
        assert_eq!(flags(&[], &[]).optional_bool(FlagId::EnableInboundIpv6), None);
        assert_eq!(flags(&[], &[("ENABLE_INBOUND_IPV6", "true")]).optional_bool(FlagId::EnableInboundIpv6), Some(true));
        assert_eq!(flags(&[], &[("ENABLE_INBOUND_IPV6", "maybe")]).optional_bool(FlagId::EnableInboundIpv6), None);
        assert_eq!(
            flags(&["--enable-inbound-ipv6=false"], &[("ENABLE_INBOUND_IPV6", "true")])
                .optional_bool(FlagId::EnableInboundIpv6),
            Some(false)
        );
    }

    #[test]
    fn unknown_flags_use_pflag_wording() {
        assert_eq!(usage_error(&["--foo"]), "unknown flag: --foo");
        assert_eq!(usage_error(&["--iptables-trace-logging"]), "unknown flag: --iptables-trace-logging");
        assert_eq!(usage_error(&["-y"]), "unknown shorthand flag: 'y' in -y");
        assert!(usage_error(&["--envoy-port"]).contains("flag needs an argument"));
    }

    #[test]
    fn logging_flags_are_accepted() {
        let f = flags(&["--log_output_level=default:debug", "--log_as_json", "--vklog=9", "--log_caller=default"], &[]);
        assert_eq!(f.string(FlagId::LogOutputLevel), "default:debug");
        assert!(f.bool(FlagId::LogAsJson));
    }
}
