//! `Config`: every setting typed and validated, plus the decisions derived from them (effective
//! DNS capture, IPv6, proxy owners). Nothing downstream sees a raw string.

pub mod cidr;
pub mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

pub use cidr::{CidrLists, OutboundCidrs};
pub use values::{IfaceName, InboundPorts, OwnerId, Port, PortSpec};

use crate::cli::{FlagId, Flags};
use crate::error::{Error, Result};
use crate::host;

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

/// What to do with the host facts that are not flags.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub passwd: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths { passwd: PathBuf::from("/etc/passwd") }
    }
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

    /// Builds the configuration from resolved flags and the environment, reading the host
    /// (passwd, interface addresses, resolv.conf) only where upstream does.
    pub fn load(flags: &Flags, env: &BTreeMap<String, String>, paths: &HostPaths) -> Result<Config> {
        let reader = FlagReader { flags };
        let env_or = |name: &str, default: &str| env.get(name).cloned().unwrap_or_else(|| default.to_string());

        // With --skip-rule-apply no rule is generated, so (as upstream) settings that only shape
        // rules cannot fail the run: the CNI validation container gets the whole injected argv.
        let rules = !flags.bool(FlagId::SkipRuleApply);
        let owner_groups = used(
            rules,
            owner_groups(
                &env_or("ISTIO_OUTBOUND_OWNER_GROUPS", "*"),
                &env_or("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", ""),
            ),
            || OwnerGroups::AllExcept(vec![]),
        )?;
        let force_iptables_binary = match flags.string(FlagId::ForceIptablesBinary) {
            "" => None,
            "legacy" => Some(IptablesBackend::Legacy),
            "nft" => Some(IptablesBackend::Nft),
            other => return Err(Error::Config(format!("invalid FORCE_IPTABLES_BINARY value {other:?}"))),
        };
        let loopback_cidr = cidr::parse_loopback(&env_or("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/32"))?;

        // Exclude before include, as upstream reports the first failure.
        let outbound_exclude = used(
            rules,
            cidr::parse_exclude(
                &flags.setting_name(FlagId::ServiceExcludeCidr),
                flags.string(FlagId::ServiceExcludeCidr),
            ),
            CidrLists::default,
        )?;
        let outbound_include = used(
            rules,
            OutboundCidrs::parse(&flags.setting_name(FlagId::ServiceCidr), flags.string(FlagId::ServiceCidr)),
            || OutboundCidrs::Only(CidrLists::default()),
        )?;

        let mode = flags.string(FlagId::InterceptionMode);
        let interception_mode = if mode == "TPROXY" { InterceptionMode::Tproxy } else { InterceptionMode::Redirect };
        if !matches!(mode, "" | "REDIRECT" | "TPROXY") {
            tracing::warn!(
                "interception mode {mode:?} is neither REDIRECT nor TPROXY; using REDIRECT as upstream does"
            );
        }
        let tproxy = interception_mode == InterceptionMode::Tproxy;
        let inbound_ports = used(
            rules,
            InboundPorts::parse(&reader.name(FlagId::InboundPorts), flags.string(FlagId::InboundPorts)),
            || InboundPorts::None,
        )?;
        // The mark only appears in TPROXY rules; the route table only in TPROXY's routes.
        let tproxy_mark = used(rules && tproxy, reader.number(FlagId::TproxyMark), || DEFAULT_TPROXY_MARK)?;
        let routes_needed = rules && tproxy && inbound_ports != InboundPorts::None;
        let tproxy_route_table =
            used(routes_needed, reader.number(FlagId::TproxyRouteTable), || DEFAULT_TPROXY_ROUTE_TABLE)?;
        let inbound_exclude_ports =
            used(rules && inbound_ports == InboundPorts::All, reader.port_list(FlagId::LocalExcludePorts), Vec::new)?;

        let (proxy_uids, proxy_gids) = used(rules, proxy_owners(&reader, env, paths), || (vec![], vec![]))?;
        let dual_stack = flags.bool(FlagId::DualStack);
        let (enable_ipv6, host_ip) = match flags.optional_bool(FlagId::EnableInboundIpv6) {
            Some(forced) => (forced, None),
            None => {
                let (ip, v6) = host::detect_ipv6(dual_stack).map_err(|e| Error::Config(e.to_string()))?;
                (v6, Some(ip))
            }
        };

        let resolv_conf = PathBuf::from(flags.string(FlagId::ResolvConf));
        let redirect_dns_requested = flags.bool(FlagId::RedirectDns);
        let capture_all_dns = flags.bool(FlagId::CaptureAllDns);
        let dns = dns_capture(redirect_dns_requested, capture_all_dns, &resolv_conf)?;

        let nft_apply_with_binary = match env.get("ISTIO_NFT_APPLY").map(String::as_str) {
            None | Some("" | "netlink") => false,
            Some("nft") => true,
            Some(other) => return Err(Error::invalid("ISTIO_NFT_APPLY", other, "expected netlink or nft")),
        };
        let dry_run_file = env.get("DRY_RUN_FILE_PATH").filter(|p| !p.is_empty()).map(PathBuf::from);
        let network_namespace =
            Some(flags.string(FlagId::NetworkNamespace)).filter(|p| !p.is_empty()).map(PathBuf::from);

        Ok(Config {
            proxy_port: reader.port(FlagId::EnvoyPort)?,
            inbound_capture_port: reader.port(FlagId::InboundCapturePort)?,
            inbound_tunnel_port: used(rules, reader.port(FlagId::InboundTunnelPort), || Port(15008))?,
            proxy_uids,
            proxy_gids,
            interception_mode,
            inbound_ports,
            inbound_exclude_ports,
            exclude_interfaces: used(rules, reader.ifaces(FlagId::ExcludeInterfaces), Vec::new)?,
            outbound_include,
            outbound_exclude,
            outbound_ports_include: used(rules, reader.port_list(FlagId::OutboundPorts), Vec::new)?,
            outbound_ports_exclude: used(rules, reader.port_list(FlagId::LocalOutboundPortsExclude), Vec::new)?,
            kube_virt_interfaces: used(rules, reader.ifaces(FlagId::KubeVirtInterfaces), Vec::new)?,
            tproxy_mark,
            tproxy_route_table,
            owner_groups,
            loopback_cidr,
            enable_ipv6,
            host_ip,
            dns,
            redirect_dns_requested,
            capture_all_dns,
            drop_invalid: flags.bool(FlagId::DropInvalid),
            dual_stack,
            dry_run: flags.bool(FlagId::DryRun),
            dry_run_file,
            skip_rule_apply: flags.bool(FlagId::SkipRuleApply),
            run_validation: flags.bool(FlagId::RunValidation),
            probe_port: flags.u16(FlagId::ProbePort),
            probe_timeout: flags.duration(FlagId::ProbeTimeout),
            reconcile: flags.bool(FlagId::Reconcile),
            cleanup_only: flags.bool(FlagId::CleanupOnly),
            force_apply: flags.bool(FlagId::ForceApply),
            native_nftables: flags.bool(FlagId::NativeNftables),
            nft_apply_with_binary,
            cni_mode: flags.bool(FlagId::CniMode),
            force_iptables_binary,
            network_namespace,
            resolv_conf,
            echoed_env: ECHOED_ENV.iter().map(|name| (*name, env.get(*name).cloned().unwrap_or_default())).collect(),
        })
    }
}

/// Reads one flag into a typed value, naming the flag (or the variable it came from) on error.
struct FlagReader<'a> {
    flags: &'a Flags,
}

impl FlagReader<'_> {
    fn name(&self, id: FlagId) -> String {
        self.flags.setting_name(id)
    }

    fn port(&self, id: FlagId) -> Result<Port> {
        Port::parse(&self.name(id), self.flags.string(id))
    }

    fn port_list(&self, id: FlagId) -> Result<Vec<PortSpec>> {
        PortSpec::parse_list(&self.name(id), self.flags.string(id))
    }

    fn ifaces(&self, id: FlagId) -> Result<Vec<IfaceName>> {
        IfaceName::parse_list(&self.name(id), self.flags.string(id))
    }

    fn number(&self, id: FlagId) -> Result<u32> {
        values::parse_u32(&self.name(id), self.flags.string(id))
    }
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
        return Err(Error::Config(format!(
            "number of owner groups whose outgoing traffic should be redirected to Envoy cannot exceed {MAX_OWNER_GROUPS}, got {}: [{}]",
            groups.len(),
            listed.join(" ")
        )));
    }
    Ok(OwnerGroups::Only(groups))
}

/// The proxy's uids and gids: an empty `--proxy-uid` means the uid of `$ENVOY_USER` (1337 when
/// unknown), and an empty `--proxy-gid` copies the uid text, list and all.
fn proxy_owners(
    reader: &FlagReader<'_>,
    env: &BTreeMap<String, String>,
    paths: &HostPaths,
) -> Result<(Vec<OwnerId>, Vec<OwnerId>)> {
    let mut uid_text = reader.flags.string(FlagId::ProxyUid).to_string();
    let mut uid_setting = reader.name(FlagId::ProxyUid);
    if uid_text.is_empty() {
        let user = env.get("ENVOY_USER").map(String::as_str).unwrap_or("istio-proxy");
        uid_text = match host::lookup_uid(&paths.passwd, user).filter(|_| !user.is_empty()) {
            Some(uid) => uid.to_string(),
            None => DEFAULT_PROXY_UID.to_string(),
        };
        uid_setting = "ENVOY_USER".to_string();
    }
    let mut gid_text = reader.flags.string(FlagId::ProxyGid).to_string();
    let mut gid_setting = reader.name(FlagId::ProxyGid);
    if gid_text.is_empty() {
        gid_text = uid_text.clone();
        gid_setting = uid_setting.clone();
    }
    Ok((OwnerId::parse_list(&uid_setting, &uid_text)?, OwnerId::parse_list(&gid_setting, &gid_text)?))
}

fn dns_capture(redirect_dns: bool, capture_all: bool, resolv_conf: &Path) -> Result<DnsCapture> {
    if !redirect_dns {
        return Ok(DnsCapture::Off);
    }
    if capture_all {
        return Ok(DnsCapture::All);
    }
    // Bytes, not UTF-8: a comment in another encoding must not make the file unreadable.
    let bytes =
        std::fs::read(resolv_conf).map_err(|source| Error::ReadFile { path: resolv_conf.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    let servers = host::split_dns_servers(&host::parse_resolv_conf_nameservers(&text));
    if servers.v4.is_empty() && servers.v6.is_empty() {
        tracing::warn!(
            "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled."
        );
        return Ok(DnsCapture::Off);
    }
    Ok(DnsCapture::Servers { v4: servers.v4, v6: servers.v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

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
