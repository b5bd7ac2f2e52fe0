//! `Config`: every setting typed and validated, plus the decisions derived from them (effective
//! DNS capture, IPv6, proxy owners). Nothing downstream sees a raw string.

pub mod cidr;
pub mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

pub use cidr::{CidrLists, OutboundCidrs};
pub use values::{IfaceName, InboundPorts, OwnerId, Port, PortSpec};

use crate::cli::{Deadline, Flags, Setting};
use crate::error::{ConfigError, Error, Result};
use crate::host::{self, HostFacts, HostNeeds};

/// Owner-group filters allow at most this many groups in an include list (upstream's limit).
const MAX_OWNER_GROUPS: usize = 64;
const DEFAULT_PROXY_UID: &str = "1337";
const DEFAULT_TPROXY_MARK: u32 = 1337;
const DEFAULT_TPROXY_ROUTE_TABLE: u32 = 133;

/// A setting's parsed value; when this run does not use the setting, a bad value is logged and
/// replaced by `fallback` instead of failing a run it cannot affect.
fn used<T>(is_used: bool, parsed: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
    match parsed {
        Err(err) if !is_used => {
            tracing::debug!("ignoring a setting this run does not use: {err}");
            Ok(fallback())
        }
        other => other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
}

/// Which iptables flavour to use, when forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesBackend {
    Legacy,
    Nft,
}

/// Whose outbound traffic is captured, by supplementary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Everyone except these groups (include is `*`).
    AllExcept(Vec<OwnerId>),
    /// Only these groups (an empty list captures nobody).
    Only(Vec<OwnerId>),
}

/// DNS capture as it takes effect, after upstream's downgrade when there is nothing to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCapture {
    Off,
    All,
    Servers { v4: Vec<Ipv4Addr>, v6: Vec<Ipv6Addr> },
}

/// Variables upstream prints at the start of a run (some, like `ENVOY_PORT`, are only printed).
pub const ECHOED_ENV: [&str; 12] = [
    "ENVOY_PORT",
    "INBOUND_CAPTURE_PORT",
    "ISTIO_INBOUND_INTERCEPTION_MODE",
    "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
    "ISTIO_INBOUND_PORTS",
    "ISTIO_OUTBOUND_PORTS",
    "ISTIO_LOCAL_EXCLUDE_PORTS",
    "ISTIO_EXCLUDE_INTERFACES",
    "ISTIO_SERVICE_CIDR",
    "ISTIO_SERVICE_EXCLUDE_CIDR",
    "ISTIO_META_DNS_CAPTURE",
    "INVALID_DROP",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub proxy_port: Port,
    pub inbound_capture_port: Port,
    pub inbound_tunnel_port: Port,
    pub proxy_uids: Vec<OwnerId>,
    pub proxy_gids: Vec<OwnerId>,
    pub interception_mode: InterceptionMode,
    pub inbound_ports: InboundPorts,
    /// Honoured only when `inbound_ports` is `*`.
    pub inbound_exclude_ports: Vec<PortSpec>,
    pub exclude_interfaces: Vec<IfaceName>,
    pub outbound_include: OutboundCidrs,
    pub outbound_exclude: CidrLists,
    pub outbound_ports_include: Vec<PortSpec>,
    pub outbound_ports_exclude: Vec<PortSpec>,
    pub kube_virt_interfaces: Vec<IfaceName>,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub owner_groups: OwnerGroups,
    pub loopback_cidr: Ipv4Net,
    pub enable_ipv6: bool,
    /// The first usable local address, when it was detected (the validator dials from it).
    pub host_ip: Option<IpAddr>,
    pub dns: DnsCapture,
    /// `--redirect-dns` as configured, before the downgrade (the config dump shows it).
    pub redirect_dns_requested: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    pub dry_run: bool,
    pub dry_run_file: Option<PathBuf>,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub probe_port: u16,
    pub probe_timeout: Duration,
    /// Deadline of each program the run starts (`--command-timeout`; zero stands for the default).
    pub command_timeout: Duration,
    /// Longest wait for another run in the same network namespace (`--lock-timeout`; zero
    /// stands for the default).
    pub lock_timeout: Duration,
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
    pub native_nftables: bool,
    /// Extension `ISTIO_NFT_APPLY=nft`: apply `--native-nftables` with `nft -f -` instead of netlink.
    pub nft_apply_with_binary: bool,
    pub cni_mode: bool,
    pub force_iptables_binary: Option<IptablesBackend>,
    pub network_namespace: Option<PathBuf>,
    pub resolv_conf: PathBuf,
    /// [`ECHOED_ENV`] with their values (empty when unset), for the run's log.
    pub echoed_env: Vec<(&'static str, String)>,
}

impl Config {
    pub fn is_tproxy(&self) -> bool {
        self.interception_mode == InterceptionMode::Tproxy
    }

    /// What [`Config::build`] will need from the host for these flags: upstream reads passwd
    /// only for an empty `--proxy-uid`, the addresses only to decide IPv6, and resolv.conf only
    /// to capture DNS by server.
    pub fn host_needs(flags: &Flags, env: &BTreeMap<String, String>) -> HostNeeds {
        let envoy_user = env.get("ENVOY_USER").map_or("istio-proxy", String::as_str);
        let dns_by_server = flags.redirect_dns.value && !flags.capture_all_dns.value;
        HostNeeds {
            passwd: flags.proxy_uid.value.is_empty() && !envoy_user.is_empty(),
            interface_addresses: flags.enable_inbound_ipv6.value.is_none(),
            resolv_conf: dns_by_server.then(|| PathBuf::from(&flags.resolv_conf.value)),
        }
    }

    /// Builds the configuration from resolved flags, the environment and the host facts
    /// [`Config::host_needs`] asked for. Pure: it reads nothing, so any host can be injected.
    pub fn build(flags: &Flags, env: &BTreeMap<String, String>, host: &HostFacts) -> Result<Config> {
        // With --skip-rule-apply no rule is generated, so (as upstream) settings that only shape
        // rules cannot fail the run: the CNI validation container gets the whole injected argv.
        let rules = !flags.skip_rule_apply.value;
        let outbound = OutboundSettings::parse(flags, env, rules)?;
        let inbound = InboundSettings::parse(flags, rules)?;
        let (proxy_uids, proxy_gids) =
            used(rules, proxy_owners(flags, env, host.passwd.as_deref()), || (vec![], vec![]))?;
        let dual_stack = flags.dual_stack.value;
        let (enable_ipv6, host_ip) = match flags.enable_inbound_ipv6.value {
            Some(forced) => (forced, None),
            None => {
                let (ip, v6) =
                    host::decide_ipv6(&host.interface_addresses, dual_stack).ok_or(ConfigError::NoValidLocalAddress)?;
                (v6, Some(ip))
            }
        };
        let redirect_dns_requested = flags.redirect_dns.value;
        let capture_all_dns = flags.capture_all_dns.value;
        let dns = dns_capture(redirect_dns_requested, capture_all_dns, host.resolv_conf.as_deref());
        let non_empty_path = |p: &str| Some(p).filter(|p| !p.is_empty()).map(PathBuf::from);
        // Extension: `ISTIO_NFT_APPLY=nft` keeps the `nft -f -` path; checked only where it is used.
        let nft_apply_with_binary = match env.get("ISTIO_NFT_APPLY").map(String::as_str) {
            _ if !(rules && flags.native_nftables.value) => false,
            None | Some("" | "netlink") => false,
            Some("nft") => true,
            Some(other) => return Err(Error::invalid("ISTIO_NFT_APPLY", other, "expected netlink or nft")),
        };

        Ok(Config {
            proxy_port: port(&flags.envoy_port)?,
            inbound_capture_port: port(&flags.inbound_capture_port)?,
            inbound_tunnel_port: used(rules, port(&flags.inbound_tunnel_port), || Port(15008))?,
            proxy_uids,
            proxy_gids,
            interception_mode: inbound.mode,
            inbound_ports: inbound.ports,
            inbound_exclude_ports: inbound.exclude_ports,
            exclude_interfaces: used(rules, ifaces(&flags.exclude_interfaces), Vec::new)?,
            outbound_include: outbound.include,
            outbound_exclude: outbound.exclude,
            outbound_ports_include: used(rules, port_list(&flags.outbound_ports), Vec::new)?,
            outbound_ports_exclude: used(rules, port_list(&flags.local_outbound_ports_exclude), Vec::new)?,
            kube_virt_interfaces: used(rules, ifaces(&flags.kube_virt_interfaces), Vec::new)?,
            tproxy_mark: inbound.tproxy_mark,
            tproxy_route_table: inbound.tproxy_route_table,
            owner_groups: outbound.owner_groups,
            loopback_cidr: outbound.loopback_cidr,
            enable_ipv6,
            host_ip,
            dns,
            redirect_dns_requested,
            capture_all_dns,
            drop_invalid: flags.drop_invalid.value,
            dual_stack,
            dry_run: flags.dry_run.value,
            dry_run_file: env.get("DRY_RUN_FILE_PATH").and_then(|p| non_empty_path(p)),
            skip_rule_apply: flags.skip_rule_apply.value,
            run_validation: flags.run_validation.value,
            probe_port: flags.probe_port.value,
            probe_timeout: flags.probe_timeout.value,
            command_timeout: deadline(&flags.command_timeout)?,
            lock_timeout: deadline(&flags.lock_timeout)?,
            reconcile: flags.reconcile.value,
            cleanup_only: flags.cleanup_only.value,
            force_apply: flags.force_apply.value,
            native_nftables: flags.native_nftables.value,
            nft_apply_with_binary,
            cni_mode: flags.cni_mode.value,
            force_iptables_binary: outbound.force_iptables_binary,
            network_namespace: non_empty_path(&flags.network_namespace.value),
            resolv_conf: PathBuf::from(&flags.resolv_conf.value),
            echoed_env: ECHOED_ENV.iter().map(|name| (*name, env.get(*name).cloned().unwrap_or_default())).collect(),
        })
    }
}

/// A deadline as the run uses it. Zero or negative (Go reads `-1s` as a wait of zero) would
/// kill every program at once or mean "no deadline" by accident, so it is refused, as is an
/// environment value that is no duration.
fn deadline(setting: &Setting<Deadline>) -> Result<Duration> {
    setting.value.parsed.filter(|wait| !wait.is_zero()).ok_or_else(|| {
        Error::invalid(&setting.name(), &setting.value.raw, "expected a positive duration such as 30s or 2m")
    })
}

/// Upstream's own checks, in upstream's order (the first failure is the one reported), and the
/// outbound destination lists.
struct OutboundSettings {
    owner_groups: OwnerGroups,
    force_iptables_binary: Option<IptablesBackend>,
    loopback_cidr: Ipv4Net,
    exclude: CidrLists,
    include: OutboundCidrs,
}

impl OutboundSettings {
    fn parse(flags: &Flags, env: &BTreeMap<String, String>, rules: bool) -> Result<Self> {
        let env_or = |name: &str, default: &str| env.get(name).cloned().unwrap_or_else(|| default.to_string());
        let owner_groups = used(
            rules,
            owner_groups(
                &env_or("ISTIO_OUTBOUND_OWNER_GROUPS", "*"),
                &env_or("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", ""),
            ),
            || OwnerGroups::AllExcept(vec![]),
        )?;
        let force_iptables_binary = match flags.force_iptables_binary.as_str() {
            "" => None,
            "legacy" => Some(IptablesBackend::Legacy),
            "nft" => Some(IptablesBackend::Nft),
            other => return Err(ConfigError::ForceIptablesBinary(other.to_string()).into()),
        };
        let loopback_cidr = cidr::parse_loopback(&env_or("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/32"))?;
        // Exclude before include, as upstream reports the first failure.
        let exclude_setting = &flags.service_exclude_cidr;
        let exclude =
            used(rules, cidr::parse_exclude(&exclude_setting.name(), exclude_setting.as_str()), CidrLists::default)?;
        let include =
            used(rules, OutboundCidrs::parse(&flags.service_cidr.name(), flags.service_cidr.as_str()), || {
                OutboundCidrs::Only(CidrLists::default())
            })?;
        Ok(OutboundSettings { owner_groups, force_iptables_binary, loopback_cidr, exclude, include })
    }
}

/// Inbound capture: the mode, the ports and TPROXY's mark and route table.
struct InboundSettings {
    mode: InterceptionMode,
    ports: InboundPorts,
    exclude_ports: Vec<PortSpec>,
    tproxy_mark: u32,
    tproxy_route_table: u32,
}

impl InboundSettings {
    fn parse(flags: &Flags, rules: bool) -> Result<Self> {
        let mode_setting = &flags.interception_mode;
        let mode =
            used(rules, interception_mode(&mode_setting.name(), mode_setting.as_str()), || InterceptionMode::Redirect)?;
        let tproxy = mode == InterceptionMode::Tproxy;
        let ports =
            used(rules, InboundPorts::parse(&flags.inbound_ports.name(), flags.inbound_ports.as_str()), || {
                InboundPorts::None
            })?;
        // The mark only appears in TPROXY rules; the route table only in TPROXY's routes.
        let mark = &flags.tproxy_mark;
        let tproxy_mark =
            used(rules && tproxy, values::parse_mark(&mark.name(), mark.as_str()), || DEFAULT_TPROXY_MARK)?;
        let routes_needed = rules && tproxy && ports != InboundPorts::None;
        let table = &flags.tproxy_route_table;
        let tproxy_route_table = used(routes_needed, values::parse_route_table(&table.name(), table.as_str()), || {
            DEFAULT_TPROXY_ROUTE_TABLE
        })?;
        let exclude_ports = used(rules && ports == InboundPorts::All, port_list(&flags.local_exclude_ports), Vec::new)?;
        Ok(InboundSettings { mode, ports, exclude_ports, tproxy_mark, tproxy_route_table })
    }
}

/// Upstream takes exactly `TPROXY` as TPROXY and anything else as REDIRECT.
fn interception_mode(setting: &str, raw: &str) -> Result<InterceptionMode> {
    values::check_mode_text(setting, raw)?;
    if !matches!(raw, "" | "REDIRECT" | "TPROXY") {
        tracing::warn!("interception mode {raw:?} is neither REDIRECT nor TPROXY; using REDIRECT as upstream does");
    }
    Ok(if raw == "TPROXY" { InterceptionMode::Tproxy } else { InterceptionMode::Redirect })
}

fn port(setting: &Setting<String>) -> Result<Port> {
    Port::parse(&setting.name(), setting.as_str())
}

fn port_list(setting: &Setting<String>) -> Result<Vec<PortSpec>> {
    PortSpec::parse_list(&setting.name(), setting.as_str())
}

fn ifaces(setting: &Setting<String>) -> Result<Vec<IfaceName>> {
    IfaceName::parse_list(&setting.name(), setting.as_str())
}

fn owner_groups(include: &str, exclude: &str) -> Result<OwnerGroups> {
    const INCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
    const EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
    if values::trim_spaces(include) == "*" {
        return OwnerId::parse_list(EXCLUDE, exclude).map(OwnerGroups::AllExcept);
    }
    let groups = OwnerId::parse_list(INCLUDE, include)?;
    if groups.len() > MAX_OWNER_GROUPS {
        let listed: Vec<&str> = groups.iter().map(OwnerId::as_str).collect();
        return Err(ConfigError::TooManyOwnerGroups {
            limit: MAX_OWNER_GROUPS,
            count: groups.len(),
            listed: listed.join(" "),
        }
        .into());
    }
    Ok(OwnerGroups::Only(groups))
}

/// The proxy's uids and gids: an empty `--proxy-uid` means the uid of `$ENVOY_USER` in
/// `passwd` (1337 when unknown), and an empty `--proxy-gid` copies the uid text, list and all.
fn proxy_owners(
    flags: &Flags,
    env: &BTreeMap<String, String>,
    passwd: Option<&str>,
) -> Result<(Vec<OwnerId>, Vec<OwnerId>)> {
    let (mut uid_text, mut uid_setting) = (flags.proxy_uid.value.clone(), flags.proxy_uid.name());
    if uid_text.is_empty() {
        let user = env.get("ENVOY_USER").map_or("istio-proxy", String::as_str);
        let uid = passwd.filter(|_| !user.is_empty()).and_then(|text| host::uid_in_passwd(text, user));
        uid_text = uid.map_or_else(|| DEFAULT_PROXY_UID.to_string(), |uid| uid.to_string());
        uid_setting = "ENVOY_USER".to_string();
    }
    let (mut gid_text, mut gid_setting) = (flags.proxy_gid.value.clone(), flags.proxy_gid.name());
    if gid_text.is_empty() {
        gid_text = uid_text.clone();
        gid_setting = uid_setting.clone();
    }
    Ok((OwnerId::parse_list(&uid_setting, &uid_text)?, OwnerId::parse_list(&gid_setting, &gid_text)?))
}

/// DNS capture as it takes effect: by server needs resolv.conf's nameservers, and with none
/// upstream turns capture off.
fn dns_capture(redirect_dns: bool, capture_all: bool, resolv_conf: Option<&str>) -> DnsCapture {
    if !redirect_dns {
        return DnsCapture::Off;
    }
    if capture_all {
        return DnsCapture::All;
    }
    let servers = host::split_dns_servers(&host::parse_resolv_conf_nameservers(resolv_conf.unwrap_or_default()));
    if servers.v4.is_empty() && servers.v6.is_empty() {
        tracing::warn!(
            "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled."
        );
        return DnsCapture::Off;
    }
    DnsCapture::Servers { v4: servers.v4, v6: servers.v6 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Parsed};

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn flags(args: &[&str], env: &BTreeMap<String, String>) -> Flags {
        match cli::parse(std::iter::once("istio-iptables").chain(args.iter().copied()), env).unwrap() {
            Parsed::Run(flags) => *flags,
            other => panic!("{other:?}"),
        }
    }

    /// Builds a config from argv, env and an injected host; nothing is read from this machine.
    fn build(args: &[&str], env: &[(&str, &str)], host: &HostFacts) -> Result<Config> {
        let env = env_of(env);
        Config::build(&flags(args, &env), &env, host)
    }

    fn addresses(list: &[&str]) -> HostFacts {
        HostFacts { interface_addresses: list.iter().map(|a| a.parse().unwrap()).collect(), ..HostFacts::default() }
    }

    #[test]
    fn host_needs_follow_what_upstream_reads() {
        let env = env_of(&[]);
        let needs = Config::host_needs(&flags(&[], &env), &env);
        assert_eq!(needs, HostNeeds { passwd: true, interface_addresses: true, resolv_conf: None });
        let args = ["-u", "1", "--enable-inbound-ipv6=false", "--redirect-dns", "--resolv-conf", "/r"];
        let needs = Config::host_needs(&flags(&args, &env), &env);
        assert_eq!(needs, HostNeeds { passwd: false, interface_addresses: false, resolv_conf: Some("/r".into()) });
        let needs = Config::host_needs(&flags(&["--redirect-dns", "--capture-all-dns"], &env), &env);
        assert_eq!(needs.resolv_conf, None, "capturing all DNS needs no servers");
        let no_user = env_of(&[("ENVOY_USER", "")]);
        assert!(!Config::host_needs(&flags(&[], &no_user), &no_user).passwd);
    }

    #[test]
    fn ipv6_is_decided_from_the_injected_addresses() {
        let config = build(&["-u", "1"], &[], &addresses(&["127.0.0.1", "::1", "fd00::5", "10.0.0.1"])).unwrap();
        assert_eq!((config.enable_ipv6, config.host_ip), (true, Some("fd00::5".parse().unwrap())));
        let config = build(&["-u", "1", "--dual-stack"], &[], &addresses(&["10.0.0.1", "fd00::5"])).unwrap();
        assert_eq!((config.enable_ipv6, config.host_ip), (true, Some("10.0.0.1".parse().unwrap())));
        let err = build(&["-u", "1"], &[], &addresses(&["127.0.0.1", "fe80::1"])).unwrap_err();
        assert_eq!((err.to_string().as_str(), err.exit_code()), ("no valid local IP address found", 1));
        let forced = build(&["-u", "1"], &[("ENABLE_INBOUND_IPV6", "false")], &HostFacts::default()).unwrap();
        assert_eq!((forced.enable_ipv6, forced.host_ip), (false, None));
    }

    #[test]
    fn the_proxy_uid_comes_from_the_injected_passwd() {
        let ipv4 = ("ENABLE_INBOUND_IPV6", "false");
        let passwd = HostFacts {
            passwd: Some("root:x:0:0:::\nistio-proxy:x:4321:4321:::\n".to_string()),
            ..HostFacts::default()
        };
        let config = build(&[], &[ipv4], &passwd).unwrap();
        assert_eq!(config.proxy_uids, vec![OwnerId::parse("x", "4321").unwrap()]);
        assert_eq!(config.proxy_gids, config.proxy_uids, "the gid copies the uid");
        let root = build(&["-g", "7"], &[ipv4, ("ENVOY_USER", "root")], &passwd).unwrap();
        assert_eq!(root.proxy_uids[0].as_str(), "0");
        assert_eq!(root.proxy_gids[0].as_str(), "7");
        let unknown = build(&[], &[ipv4], &HostFacts::default()).unwrap();
        assert_eq!(unknown.proxy_uids[0].as_str(), "1337", "no passwd: upstream's fallback");
    }

    #[test]
    fn dns_servers_come_from_the_injected_resolv_conf() {
        let env = [("ENABLE_INBOUND_IPV6", "false")];
        let host = HostFacts {
            resolv_conf: Some("search x\nnameserver 10.0.0.10\nnameserver fd00::53\n".to_string()),
            ..HostFacts::default()
        };
        let config = build(&["-u", "1", "--redirect-dns"], &env, &host).unwrap();
        assert_eq!(
            config.dns,
            DnsCapture::Servers { v4: vec![Ipv4Addr::new(10, 0, 0, 10)], v6: vec!["fd00::53".parse().unwrap()] }
        );
        let empty = HostFacts { resolv_conf: Some("# none\n".to_string()), ..HostFacts::default() };
        assert_eq!(build(&["-u", "1", "--redirect-dns"], &env, &empty).unwrap().dns, DnsCapture::Off);
        let all = build(&["-u", "1", "--redirect-dns", "--capture-all-dns"], &env, &HostFacts::default()).unwrap();
        assert_eq!(all.dns, DnsCapture::All);
    }

    #[test]
    fn tproxy_marks_and_tables_outside_the_usable_range_are_rejected() {
        let env = [("ENABLE_INBOUND_IPV6", "false")];
        let host = HostFacts::default();
        let tproxy = ["-u", "1", "-m", "TPROXY", "-b", "80"];
        let with = |extra: &[&str]| build(&[&tproxy[..], extra].concat(), &env, &host);
        let err = with(&["-t", "0"]).unwrap_err();
        assert_eq!(err.to_string(), "invalid value \"0\" for --istio-inbound-tproxy-mark: a packet mark must not be 0");
        assert_eq!(err.exit_code(), 1);
        assert!(with(&["-r", "0"])
            .unwrap_err()
            .to_string()
            .starts_with("invalid value \"0\" for --istio-inbound-tproxy-route-table: "));
        assert!(with(&["-r", "254"]).is_err());
        let config = with(&["-t", "0x10", "-r", "0xffffffff"]).unwrap();
        assert_eq!((config.tproxy_mark, config.tproxy_route_table), (16, u32::MAX));
        // Unused settings cannot fail a run, as before: REDIRECT has no mark, no ports no routes.
        assert!(build(&["-u", "1", "-t", "0", "-r", "0"], &env, &host).is_ok());
        assert!(build(&["-u", "1", "-m", "TPROXY", "-r", "0"], &env, &host).is_ok());
    }

    #[test]
    fn deadlines_must_be_positive() {
        let env = [("ENABLE_INBOUND_IPV6", "false")];
        let host = HostFacts::default();
        let config = build(&["-u", "1", "--command-timeout=90s"], &env, &host).unwrap();
        assert_eq!((config.command_timeout, config.lock_timeout), (Duration::from_secs(90), Duration::from_secs(30)));
        for (args, variable, value, setting) in [
            (&["--command-timeout=-1s"][..], None, "-1s", "--command-timeout"),
            (&["--lock-timeout", "0"], None, "0", "--lock-timeout"),
            (&[], Some("ISTIO_IPTABLES_COMMAND_TIMEOUT"), "-1s", "ISTIO_IPTABLES_COMMAND_TIMEOUT"),
            (&[], Some("ISTIO_IPTABLES_LOCK_TIMEOUT"), "soon", "ISTIO_IPTABLES_LOCK_TIMEOUT"),
        ] {
            let env = [env[0], (variable.unwrap_or("UNUSED"), value)];
            let err = build(&[&["-u", "1"][..], args].concat(), &env, &host).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid value \"{value}\" for {setting}: expected a positive duration such as 30s or 2m")
            );
            assert_eq!(err.exit_code(), 1);
        }
    }

    #[test]
    fn the_interception_mode_rejects_whitespace_but_keeps_the_redirect_fallback() {
        let env = [("ENABLE_INBOUND_IPV6", "false")];
        let host = HostFacts::default();
        let err = build(&["-u", "1", "-m", "TPROXY "], &env, &host).unwrap_err();
        assert!(err.to_string().starts_with("invalid value \"TPROXY \" for --istio-inbound-interception-mode: "));
        let env_mode = build(&["-u", "1"], &[env[0], ("ISTIO_INBOUND_INTERCEPTION_MODE", "TPROXY\n")], &host);
        assert!(env_mode.unwrap_err().to_string().contains("for ISTIO_INBOUND_INTERCEPTION_MODE: "));
        let unknown = build(&["-u", "1", "-m", "tproxy"], &env, &host).unwrap();
        assert_eq!(unknown.interception_mode, InterceptionMode::Redirect);
        let skipped = build(&["-u", "1", "-m", "TPROXY ", "--skip-rule-apply"], &env, &host).unwrap();
        assert_eq!(skipped.interception_mode, InterceptionMode::Redirect, "no rules: the mode is unused");
    }

    #[test]
    fn owner_group_include_limit_uses_upstream_message() {
        let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        let err = owner_groups(&many.join(","), "").unwrap_err().to_string();
        assert!(err.starts_with(
            "number of owner groups whose outgoing traffic should be redirected to Envoy cannot exceed 64, got 65: [0 1 2"
        ), "{err}");
        assert_eq!(
            owner_groups("*", "888,ftp").unwrap(),
            OwnerGroups::AllExcept(vec![OwnerId::parse("x", "888").unwrap(), OwnerId::parse("x", "ftp").unwrap()])
        );
        assert_eq!(owner_groups("", "888").unwrap(), OwnerGroups::Only(vec![]));
    }
}
