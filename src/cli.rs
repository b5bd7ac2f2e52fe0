//! The command line, defined once. Every flag is one row of the [`define_flags!`] table below: its
//! id, the typed field it resolves into, long and short names, default, environment bindings and
//! help. From that one table come [`FlagId`], [`FLAGS`] (which the clap model, `--help`, the man
//! page and the shell completions are built from) and [`Flags`], the typed resolved values. A row's
//! Rust type decides how it is parsed, so a flag cannot be read as the wrong type, and every field
//! is always resolved: there is no lookup that can miss.
//!
//! Upstream is a cobra/pflag command, so this module reproduces pflag's syntax (`--f v`, `--f=v`,
//! `-f v`, `-fv`, `-f=v`, attached-only boolean values, last occurrence wins, positionals ignored)
//! and its environment binding: environment values are applied before the command line, and an
//! "additional" variable overrides the derived one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::error::{Error, Result, UsageError};

mod value;

pub use value::{Deadline, FlagValue, Setting, Source};

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

#[derive(Debug)]
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

/// Optional row fields: `short`, `env`, `additional_env` and `group`.
macro_rules! optional {
    () => {
        None
    };
    ($value:literal) => {
        Some($value)
    };
}

macro_rules! group_or_upstream {
    () => {
        Group::Upstream
    };
    ($group:ident) => {
        Group::$group
    };
}

/// Generates [`FlagId`], the definition table and [`Flags`] from one list of rows, in upstream's
/// registration order (the order also decides the order of environment application).
macro_rules! define_flags {
    ($(
        $id:ident $field:ident: $ty:ty {
            long: $long:literal,
            $(short: $short:literal,)?
            default: $default:literal,
            $(env: $env:literal,)?
            $(additional_env: $additional_env:literal,)?
            $(group: $group:ident,)?
            help: $help:literal $(,)?
        }
    )*) => {
        /// Identifies a flag; its discriminant is its index in [`FLAGS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FlagId { $($id),* }

        const FLAG_COUNT: usize = [$(FlagId::$id),*].len();

        static FLAG_TABLE: [FlagDef; FLAG_COUNT] = [$(
            FlagDef {
                id: FlagId::$id,
                long: $long,
                short: optional!($($short)?),
                kind: <$ty as FlagValue>::KIND,
                default: $default,
                env: optional!($($env)?),
                additional_env: optional!($($additional_env)?),
                group: group_or_upstream!($($group)?),
                help: $help,
            }
        ),*];

        /// Every flag resolved (command line, then additional env, then env, then default).
        #[derive(Debug, Clone)]
        pub struct Flags {
            $(pub $field: Setting<$ty>,)*
        }

        impl Flags {
            fn resolve(matches: &ArgMatches, env: &BTreeMap<String, String>) -> Result<Flags> {
                Ok(Flags { $($field: resolve(def(FlagId::$id), matches, env)?,)* })
            }
        }
    };
}

define_flags! {
    EnvoyPort envoy_port: String {
        long: "envoy-port", short: 'p', default: "15001",
        help: "Specify the envoy port to which redirect all TCP traffic (the ENVOY_PORT variable is not read, as upstream)",
    }
    InboundCapturePort inbound_capture_port: String {
        long: "inbound-capture-port", short: 'z', default: "15006", env: "INBOUND_CAPTURE_PORT",
        help: "Port to which all inbound TCP traffic to the pod/VM should be redirected",
    }
    InboundTunnelPort inbound_tunnel_port: String {
        long: "inbound-tunnel-port", short: 'e', default: "15008", env: "INBOUND_TUNNEL_PORT",
        help: "Specify the istio tunnel port for inbound tcp traffic",
    }
    ProxyUid proxy_uid: String {
        long: "proxy-uid", short: 'u', default: "", env: "PROXY_UID",
        help: "Specify the UID of the user for which the redirection is not applied. Typically, this is the UID of the proxy container (when empty: the uid of $ENVOY_USER, default istio-proxy, from /etc/passwd; 1337 if unknown)",
    }
    ProxyGid proxy_gid: String {
        long: "proxy-gid", short: 'g', default: "", env: "PROXY_GID",
        help: "Specify the GID of the user for which the redirection is not applied (same default value as -u param)",
    }
    InterceptionMode interception_mode: String {
        long: "istio-inbound-interception-mode", short: 'm', default: "", env: "ISTIO_INBOUND_INTERCEPTION_MODE",
        help: "The mode used to redirect inbound connections to Envoy, either \"REDIRECT\" or \"TPROXY\" (empty or anything else: REDIRECT)",
    }
    InboundPorts inbound_ports: String {
        long: "istio-inbound-ports", short: 'b', default: "", env: "ISTIO_INBOUND_PORTS",
        help: "Comma separated list of inbound ports for which traffic is to be redirected to Envoy (optional). The wildcard character \"*\" can be used to configure redirection for all ports. An empty list will disable inbound capture",
    }
    LocalExcludePorts local_exclude_ports: String {
        long: "istio-local-exclude-ports", short: 'd', default: "", env: "ISTIO_LOCAL_EXCLUDE_PORTS",
        help: "Comma separated list of inbound ports to be excluded from redirection to Envoy (optional). Only applies when all inbound traffic (i.e. \"*\") is being redirected",
    }
    ExcludeInterfaces exclude_interfaces: String {
        long: "istio-exclude-interfaces", short: 'c', default: "", env: "ISTIO_EXCLUDE_INTERFACES",
        help: "Comma separated list of NIC (optional). Neither inbound nor outbound traffic will be captured",
    }
    ServiceCidr service_cidr: String {
        long: "istio-service-cidr", short: 'i', default: "", env: "ISTIO_SERVICE_CIDR",
        help: "Comma separated list of IP ranges in CIDR form to redirect to envoy (optional). The wildcard character \"*\" can be used to redirect all outbound traffic. An empty list will disable all outbound redirection into Envoy",
    }
    ServiceExcludeCidr service_exclude_cidr: String {
        long: "istio-service-exclude-cidr", short: 'x', default: "", env: "ISTIO_SERVICE_EXCLUDE_CIDR",
        help: "Comma separated list of IP ranges in CIDR form to be excluded from redirection. Only applies when all outbound traffic (i.e. \"*\") is being redirected",
    }
    OutboundPorts outbound_ports: String {
        long: "istio-outbound-ports", short: 'q', default: "", env: "ISTIO_OUTBOUND_PORTS",
        help: "Comma separated list of outbound ports to be explicitly included for redirection to Envoy",
    }
    LocalOutboundPortsExclude local_outbound_ports_exclude: String {
        long: "istio-local-outbound-ports-exclude", short: 'o', default: "", env: "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        help: "Comma separated list of outbound ports to be excluded from redirection to Envoy",
    }
    KubeVirtInterfaces kube_virt_interfaces: String {
        long: "kube-virt-interfaces", short: 'k', default: "", env: "KUBE_VIRT_INTERFACES",
        help: "Comma separated list of virtual interfaces whose inbound traffic (from VM) will be treated as outbound",
    }
    TproxyMark tproxy_mark: String {
        long: "istio-inbound-tproxy-mark", short: 't', default: "1337", env: "ISTIO_INBOUND_TPROXY_MARK",
        help: "The packet mark used by TPROXY inbound interception (1 to 4294967295, decimal or 0x hex)",
    }
    TproxyRouteTable tproxy_route_table: String {
        long: "istio-inbound-tproxy-route-table", short: 'r', default: "133", env: "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        help: "The policy routing table used by TPROXY inbound interception (1 to 4294967295 except the reserved 253, 254 and 255)",
    }
    DryRun dry_run: bool {
        long: "dry-run", short: 'n', default: "false", env: "DRY_RUN",
        help: "Do not call any external dependencies like iptables",
    }
    ProbePort probe_port: u16 {
        long: "iptables-probe-port", default: "15002", env: "IPTABLES_PROBE_PORT",
        help: "Set listen port for failure detection",
    }
    ProbeTimeout probe_timeout: Duration {
        long: "probe-timeout", default: "5s", env: "PROBE_TIMEOUT",
        help: "Failure detection timeout",
    }
    SkipRuleApply skip_rule_apply: bool {
        long: "skip-rule-apply", default: "false", env: "SKIP_RULE_APPLY",
        help: "Skip iptables apply",
    }
    RunValidation run_validation: bool {
        long: "run-validation", default: "false", env: "RUN_VALIDATION",
        help: "Validate iptables",
    }
    RedirectDns redirect_dns: bool {
        long: "redirect-dns", default: "false", env: "REDIRECT_DNS", additional_env: "ISTIO_META_DNS_CAPTURE",
        help: "Enable capture of dns traffic by istio-agent",
    }
    DropInvalid drop_invalid: bool {
        long: "drop-invalid", default: "false", env: "DROP_INVALID", additional_env: "INVALID_DROP",
        help: "Enable invalid drop in the iptables rules",
    }
    DualStack dual_stack: bool {
        long: "dual-stack", default: "false", env: "DUAL_STACK", additional_env: "ISTIO_DUAL_STACK",
        help: "Enable ipv4/ipv6 redirects for dual-stack.",
    }
    CaptureAllDns capture_all_dns: bool {
        long: "capture-all-dns", default: "false", env: "CAPTURE_ALL_DNS",
        help: "Instead of only capturing DNS traffic to DNS server IP, capture all DNS traffic at port 53. This setting is only effective when redirect dns is enabled.",
    }
    NetworkNamespace network_namespace: String {
        long: "network-namespace", default: "", env: "NETWORK_NAMESPACE",
        help: "The network namespace that iptables rules should be applied to.",
    }
    CniMode cni_mode: bool {
        long: "cni-mode", default: "false", env: "CNI_MODE",
        help: "Whether to run as CNI plugin.",
    }
    Reconcile reconcile: bool {
        long: "reconcile", default: "false", env: "RECONCILE",
        help: "Reconcile pre-existing and incompatible iptables rules instead of failing if drift is detected.",
    }
    CleanupOnly cleanup_only: bool {
        long: "cleanup-only", default: "false", env: "CLEANUP_ONLY",
        help: "Perform a forced cleanup without creating new iptables chains or rules.",
    }
    ForceApply force_apply: bool {
        long: "force-apply", default: "false", env: "FORCE_APPLY",
        help: "Apply iptables changes even if they appear to already be in place.",
    }
    NativeNftables native_nftables: bool {
        long: "native-nftables", default: "false", env: "NATIVE_NFTABLES",
        help: "Use native nftables instead of iptables rules",
    }
    ForceIptablesBinary force_iptables_binary: String {
        long: "force-iptables-binary", default: "", env: "FORCE_IPTABLES_BINARY",
        help: "Break-glass: force the iptables backend, \"legacy\" or \"nft\" (empty: detect)",
    }
    EnableInboundIpv6 enable_inbound_ipv6: Option<bool> {
        long: "enable-inbound-ipv6", default: "", env: "ENABLE_INBOUND_IPV6", group: Extension,
        help: "Force IPv6 rules on (true) or off (false) instead of detecting them from the interface addresses",
    }
    ResolvConf resolv_conf: String {
        long: "resolv-conf", default: "/etc/resolv.conf", group: Extension,
        help: "The resolv.conf file whose nameservers DNS capture redirects (a regular file of at most 1 MiB)",
    }
    CommandTimeout command_timeout: Deadline {
        long: "command-timeout", default: "60s", env: "ISTIO_IPTABLES_COMMAND_TIMEOUT", group: Extension,
        help: "How long each program the run starts (iptables-restore, -save, nft) may take before it is killed and the run fails with a rollback (a positive Go duration)",
    }
    LockTimeout lock_timeout: Deadline {
        long: "lock-timeout", default: "30s", env: "ISTIO_IPTABLES_LOCK_TIMEOUT", group: Extension,
        help: "How long to wait while another run programs the same network namespace (a positive Go duration)",
    }
    Report report: String {
        long: "report", default: "", env: "ISTIO_IPTABLES_REPORT", group: Extension,
        help: "After the run, successful or not, write one JSON object describing it (backend and why, action, rule counts and hash, programs run, warnings, error) to this file; /dev/termination-log shows it in kubectl describe pod",
    }
    LogOutputLevel log_output_level: String {
        long: "log_output_level", default: "default:info", group: Logging,
        help: "Comma-separated minimum per-scope logging level of messages to output, in the form of <scope>:<level>,<scope>:<level>,... where scope can be one of [default] and level can be one of [debug, info, warn, error, fatal, none]",
    }
    LogAsJson log_as_json: bool {
        long: "log_as_json", default: "false", group: Logging,
        help: "Whether to format output as JSON or in plain console-friendly format",
    }
    LogCaller log_caller: String {
        long: "log_caller", default: "", group: Logging,
        help: "Comma-separated list of scopes for which to include caller information (accepted, ignored)",
    }
    LogStacktraceLevel log_stacktrace_level: String {
        long: "log_stacktrace_level", default: "default:none", group: Logging,
        help: "Comma-separated minimum per-scope logging level at which stack traces are captured (accepted, ignored)",
    }
    LogTarget log_target: String {
        long: "log_target", default: "stdout", group: Logging,
        help: "The set of paths where to output the log (accepted; logs always go to stderr because stdout carries the rules)",
    }
    LogRotate log_rotate: String {
        long: "log_rotate", default: "", group: Logging,
        help: "The path for the optional rotating log file (accepted, ignored)",
    }
    LogRotateMaxAge log_rotate_max_age: i64 {
        long: "log_rotate_max_age", default: "30", group: Logging,
        help: "The maximum age in days of a log file beyond which the file is rotated (accepted, ignored)",
    }
    LogRotateMaxSize log_rotate_max_size: i64 {
        long: "log_rotate_max_size", default: "104857600", group: Logging,
        help: "The maximum size in megabytes of a log file beyond which the file is rotated (accepted, ignored)",
    }
    LogRotateMaxBackups log_rotate_max_backups: i64 {
        long: "log_rotate_max_backups", default: "1000", group: Logging,
        help: "The maximum number of log file backups to keep before older files are deleted (accepted, ignored)",
    }
    Vklog vklog: i64 {
        long: "vklog", default: "0", group: Logging,
        help: "number for the log level verbosity. Like -v flag. ex: --vklog=9 (accepted, ignored)",
    }
}

/// Every flag, in upstream's registration order.
pub static FLAGS: &[FlagDef] = &FLAG_TABLE;

/// A flag's definition. The table is generated from the same rows as [`FlagId`], in the same
/// order, so the index is always in range.
pub fn def(id: FlagId) -> &'static FlagDef {
    &FLAG_TABLE[id as usize]
}

/// The upstream source this clone matches: the istio/istio commit the parity tests' golden files
/// come from.
pub const UPSTREAM_ISTIO: &str = "istio/istio@86c9f01fd735 (2026-08-22)";

/// `--version`: the crate version, the commit it was built from and [`UPSTREAM_ISTIO`]. The
/// commit comes from `ISTIO_IPTABLES_COMMIT` at compile time (set by `build.rs` from git, or by
/// the build environment), else `unknown`: a build without `.git` or `build.rs` still works.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let commit = option_env!("ISTIO_IPTABLES_COMMIT").unwrap_or("unknown");
        format!("{} (commit {commit}; matches {UPSTREAM_ISTIO})", env!("CARGO_PKG_VERSION"))
    })
}

/// The outcome of parsing: either flags to run with, or text to print and leave.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Flags>),
    Help(String),
    Version(String),
}

/// The clap model built from [`FLAGS`]; also used to render the man page and completions.
pub fn command() -> Command {
    let mut cmd = Command::new("istio-iptables")
        .about("Set up iptables (or nftables) rules to capture a pod's traffic for the Istio sidecar")
        .version(version())
        .disable_version_flag(true)
        .args_override_self(true)
        .dont_delimit_trailing_values(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version, the commit and the upstream Istio source it matches, and exit (extension)"),
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
        let mut arg = Arg::new(def.long).long(def.long).help(annotated_help(def)).action(ArgAction::Set);
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

/// The help text followed by the default (when it says something) and the environment
/// variables, as `--help` and the man page show them.
pub fn annotated_help(def: &FlagDef) -> String {
    let mut help = def.help.to_string();
    let has_default = !def.default.is_empty() && !matches!(def.kind, Kind::Bool | Kind::OptionalBool);
    if has_default {
        help.push_str(&format!(" [default: {}]", def.default));
    }
    match (def.env, def.additional_env) {
        (Some(env), Some(alias)) => help.push_str(&format!(" [env: {env}, overridden by {alias}]")),
        (Some(env), None) => help.push_str(&format!(" [env: {env}]")),
        _ => {}
    }
    help
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
                _ => Err(pflag_error(err).into()),
            }
        }
    };
    Ok(Parsed::Run(Box::new(Flags::resolve(&matches, env)?)))
}

fn resolve<T: FlagValue>(
    def: &'static FlagDef,
    matches: &ArgMatches,
    env: &BTreeMap<String, String>,
) -> Result<Setting<T>> {
    let invalid = |raw: &str, source| {
        Error::from(UsageError::InvalidArgument { value: raw.to_string(), flag: flag_display(def), source })
    };
    if matches.value_source(def.long) == Some(clap::parser::ValueSource::CommandLine) {
        let raw = matches.get_one::<String>(def.long).map(String::as_str).unwrap_or_default();
        let value = T::from_command_line(raw).map_err(|e| invalid(raw, e))?;
        return Ok(Setting { value, source: Source::CommandLine, def });
    }
    for name in [def.additional_env, def.env].into_iter().flatten() {
        if let Some(value) = env.get(name).and_then(|raw| T::from_env(raw)) {
            return Ok(Setting { value, source: Source::Env(name), def });
        }
    }
    // A default that does not parse is a bug in the table; it fails every run loudly (and the
    // unit tests below), never silently.
    let value = T::unset(def.default).map_err(|e| invalid(def.default, e))?;
    Ok(Setting { value, source: Source::Default, def })
}

fn flag_display(def: &FlagDef) -> String {
    match def.short {
        Some(short) => format!("-{short}, --{}", def.long),
        None => format!("--{}", def.long),
    }
}

/// Turns clap's error into pflag's wording (what users of upstream grep their logs for).
fn pflag_error(err: clap::Error) -> UsageError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let invalid_arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match (err.kind(), invalid_arg) {
        (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with("--") => {
            UsageError::UnknownFlag(arg.split('=').next().unwrap_or(&arg).to_string())
        }
        (ErrorKind::UnknownArgument, Some(arg)) => {
            let short = arg.trim_start_matches('-').chars().next().unwrap_or('-');
            UsageError::UnknownShorthand { short, arg }
        }
        (ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::TooFewValues, Some(arg)) => {
            UsageError::NeedsArgument(arg.split_whitespace().next().unwrap_or(&arg).to_string())
        }
        _ => UsageError::Parser(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str], env: &[(&str, &str)]) -> Flags {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
        match parse(argv, &env).expect("parses") {
            Parsed::Run(flags) => *flags,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
        match parse(argv, &BTreeMap::new()) {
            Err(err @ Error::Usage(_)) => err.to_string(),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_table_is_indexed_by_id() {
        for (index, def) in FLAGS.iter().enumerate() {
            assert_eq!(def.id as usize, index, "{}", def.long);
            assert_eq!(super::def(def.id).long, def.long);
        }
        assert_eq!(FLAGS.len(), FLAG_COUNT);
        assert_eq!(FLAGS.last().map(|d| d.id), Some(FlagId::Vklog));
    }

    #[test]
    fn every_default_resolves_and_is_marked_as_default() {
        let f = flags(&[], &[]);
        assert_eq!(f.envoy_port.value, "15001");
        assert_eq!(f.envoy_port.source, Source::Default);
        assert_eq!(f.probe_timeout.value, Duration::from_secs(5));
        assert_eq!(f.probe_port.value, 15002);
        assert_eq!(f.log_rotate_max_size.value, 104_857_600);
        assert_eq!(f.enable_inbound_ipv6.value, None);
        assert!(!f.dry_run.value);
    }

    #[test]
    fn env_names_are_derived_from_long_names_except_envoy_port() {
        for def in FLAGS.iter().filter(|d| d.group == Group::Upstream && d.id != FlagId::EnvoyPort) {
            assert_eq!(def.env, Some(def.long.to_uppercase().replace('-', "_").as_str()), "{}", def.long);
        }
        assert_eq!(def(FlagId::EnvoyPort).env, None);
    }

    #[test]
    fn help_shows_defaults_and_environment_variables() {
        // Whitespace-insensitive: clap may wrap long lines to the terminal's width.
        let help = command().render_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("[default: 15006] [env: INBOUND_CAPTURE_PORT]"), "{help}");
        assert!(help.contains("[env: REDIRECT_DNS, overridden by ISTIO_META_DNS_CAPTURE]"), "{help}");
        assert!(help.contains("[default: 5s] [env: PROBE_TIMEOUT]"), "{help}");
        assert!(!help.contains("$ENVOY_PORT"), "ENVOY_PORT is not read");
        assert!(!help.contains("by default this is the Envoy port"));
        assert!(help.contains("An empty list will disable inbound capture"));
    }

    #[test]
    fn version_names_the_commit_and_the_upstream_source() {
        let version = version();
        assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
        assert!(version.contains("(commit "), "{version}");
        assert!(version.ends_with("; matches istio/istio@86c9f01fd735 (2026-08-22))"), "{version}");
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
            assert_eq!(flags(args, &[]).envoy_port.value, "1", "{args:?}");
        }
        assert_eq!(flags(&["-x", ""], &[]).service_exclude_cidr.value, "");
        assert_eq!(flags(&["-x", "-b"], &[]).service_exclude_cidr.value, "-b");
    }

    #[test]
    fn booleans_take_attached_values_only() {
        assert!(flags(&["--dry-run"], &[]).dry_run.value);
        assert!(flags(&["-n"], &[]).dry_run.value);
        assert!(!flags(&["--dry-run=false"], &[]).dry_run.value);
        assert!(!flags(&["-n=F"], &[]).dry_run.value);
        // `false` becomes an ignored positional, as with pflag.
        assert!(flags(&["--dry-run", "false"], &[]).dry_run.value);
        assert_eq!(
            usage_error(&["--dry-run=yes"]),
            "invalid argument \"yes\" for \"-n, --dry-run\" flag: strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }

    #[test]
    fn positionals_and_a_leading_subcommand_word_are_ignored() {
        let f = flags(&["istio-iptables", "-p", "1", "extra", "-z", "2", "--", "-q"], &[]);
        assert_eq!(f.envoy_port.value, "1");
        assert_eq!(f.inbound_capture_port.value, "2");
        assert_eq!(f.outbound_ports.value, "");
    }

    #[test]
    fn env_precedence() {
        let f = flags(&[], &[("REDIRECT_DNS", "true"), ("ISTIO_META_DNS_CAPTURE", "false")]);
        assert!(!f.redirect_dns.value);
        let f = flags(&[], &[("REDIRECT_DNS", "true"), ("ISTIO_META_DNS_CAPTURE", "")]);
        assert!(!f.redirect_dns.value, "an empty additional env is an invalid bool, i.e. false");
        let f = flags(&["--redirect-dns"], &[("ISTIO_META_DNS_CAPTURE", "false")]);
        assert!(f.redirect_dns.value, "the command line wins");
        assert_eq!(f.redirect_dns.source, Source::CommandLine);
        let f = flags(&[], &[("DROP_INVALID", "1")]);
        assert!(f.drop_invalid.value);
        let f = flags(&[], &[("ENVOY_PORT", "9")]);
        assert_eq!(f.envoy_port.value, "15001", "ENVOY_PORT is not bound");
        let f = flags(&[], &[("ISTIO_INBOUND_TPROXY_MARK", "")]);
        assert_eq!(f.tproxy_mark.value, "");
        assert_eq!(f.tproxy_mark.name(), "ISTIO_INBOUND_TPROXY_MARK");
        assert_eq!(flags(&[], &[]).tproxy_mark.name(), "--istio-inbound-tproxy-mark");
    }

    #[test]
    fn deadlines_come_from_the_flag_or_the_environment() {
        let deadlines = |f: &Flags| (f.command_timeout.value.parsed, f.lock_timeout.value.parsed);
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(deadlines(&flags(&[], &[])), (secs(60), secs(30)));
        let env = [("ISTIO_IPTABLES_COMMAND_TIMEOUT", "90s"), ("ISTIO_IPTABLES_LOCK_TIMEOUT", "2m")];
        assert_eq!(deadlines(&flags(&[], &env)), (secs(90), secs(120)));
        let f = flags(&["--command-timeout=5s", "--lock-timeout", "1s"], &env);
        assert_eq!(deadlines(&f), (secs(5), secs(1)));
        assert!(usage_error(&["--lock-timeout=soon"]).contains("--lock-timeout"));
        // Kept as given for the configuration to refuse: Go reads `-1s` as zero.
        let f = flags(&["--command-timeout=-1s"], &[("ISTIO_IPTABLES_LOCK_TIMEOUT", "soon")]);
        assert_eq!(f.command_timeout.value, Deadline { raw: "-1s".into(), parsed: Some(Duration::ZERO) });
        assert_eq!(f.lock_timeout.value, Deadline { raw: "soon".into(), parsed: None });
        assert_eq!(f.lock_timeout.name(), "ISTIO_IPTABLES_LOCK_TIMEOUT");
        let help = command().render_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("[default: 60s] [env: ISTIO_IPTABLES_COMMAND_TIMEOUT]"), "{help}");
    }

    #[test]
    fn typed_env_values_follow_upstream_fallbacks() {
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "nope")]).probe_port.value, 0);
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "70000")]).probe_port.value, 65535);
        assert_eq!(flags(&[], &[("IPTABLES_PROBE_PORT", "0x10")]).probe_port.value, 16);
        assert_eq!(flags(&[], &[("PROBE_TIMEOUT", "x")]).probe_timeout.value, Duration::ZERO);
        assert_eq!(flags(&[], &[("PROBE_TIMEOUT", "2m")]).probe_timeout.value, Duration::from_secs(120));
        assert!(usage_error(&["--iptables-probe-port=70000"]).contains("out of range"));
        assert_eq!(
            usage_error(&["--probe-timeout=abc"]),
            "invalid argument \"abc\" for \"--probe-timeout\" flag: time: invalid duration \"abc\""
        );
        assert_eq!(
            usage_error(&["--vklog=x"]),
            "invalid argument \"x\" for \"--vklog\" flag: strconv.ParseInt: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn enable_inbound_ipv6_is_optional() {
        assert_eq!(flags(&[], &[]).enable_inbound_ipv6.value, None);
        assert_eq!(flags(&[], &[("ENABLE_INBOUND_IPV6", "true")]).enable_inbound_ipv6.value, Some(true));
        let ignored = flags(&[], &[("ENABLE_INBOUND_IPV6", "maybe")]).enable_inbound_ipv6;
        assert_eq!((ignored.value, ignored.source), (None, Source::Default));
        assert_eq!(
            flags(&["--enable-inbound-ipv6=false"], &[("ENABLE_INBOUND_IPV6", "true")]).enable_inbound_ipv6.value,
            Some(false)
        );
    }

    #[test]
    fn unknown_flags_use_pflag_wording() {
        assert_eq!(usage_error(&["--foo"]), "unknown flag: --foo");
        assert_eq!(usage_error(&["--foo=1"]), "unknown flag: --foo");
        assert_eq!(usage_error(&["--iptables-trace-logging"]), "unknown flag: --iptables-trace-logging");
        assert_eq!(usage_error(&["-y"]), "unknown shorthand flag: 'y' in -y");
        assert!(usage_error(&["--envoy-port"]).starts_with("flag needs an argument: "));
    }

    #[test]
    fn logging_flags_are_accepted() {
        let f = flags(&["--log_output_level=default:debug", "--log_as_json", "--vklog=9", "--log_caller=default"], &[]);
        assert_eq!(f.log_output_level.value, "default:debug");
        assert!(f.log_as_json.value);
        assert_eq!(f.vklog.value, 9);
    }
}
