//! The info-level account of a run that upstream logs: the relevant environment, then the
//! effective configuration.

use std::fmt::Write as _;

use crate::config::{Config, DnsCapture, InboundPorts, OutboundCidrs, OwnerGroups};
use crate::gocompat::format_go_duration;

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

pub fn log_configuration(config: &Config) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let backend = if config.native_nftables { "nftables" } else { "iptables" };
    let mut env = format!("Istio {backend} environment:\n");
    for (name, value) in &config.echoed_env {
        let _ = writeln!(env, "{name}={value}");
    }
    tracing::info!("{env}");
    tracing::info!("Istio config:\n{}", describe(config));
}

/// `KEY=value` lines in upstream's order.
pub fn describe(c: &Config) -> String {
    let inbound = match &c.inbound_ports {
        InboundPorts::None => String::new(),
        InboundPorts::All => "*".to_string(),
        InboundPorts::Listed(ports) => ports.iter().map(|p| p.iptables()).collect::<Vec<_>>().join(","),
    };
    let ports = |ports: &[crate::config::PortSpec]| ports.iter().map(|p| p.iptables()).collect::<Vec<_>>().join(",");
    let (groups_include, groups_exclude) = match &c.owner_groups {
        OwnerGroups::AllExcept(groups) => ("*".to_string(), join(groups)),
        OwnerGroups::Only(groups) => (join(groups), String::new()),
    };
    let include = match &c.outbound_include {
        OutboundCidrs::All => "*".to_string(),
        OutboundCidrs::Only(lists) => {
            [join(&lists.v4), join(&lists.v6)].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(",")
        }
    };
    let exclude = [join(&c.outbound_exclude.v4), join(&c.outbound_exclude.v6)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    let (dns_v4, dns_v6) = match &c.dns {
        DnsCapture::Servers { v4, v6 } => (
            v4.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            v6.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        ),
        _ => (String::new(), String::new()),
    };
    let mode = if c.is_tproxy() { "TPROXY" } else { "REDIRECT" };
    let lines: [(&str, String); 31] = [
        ("PROXY_PORT", c.proxy_port.to_string()),
        ("PROXY_INBOUND_CAPTURE_PORT", c.inbound_capture_port.to_string()),
        ("PROXY_TUNNEL_PORT", c.inbound_tunnel_port.to_string()),
        ("PROXY_UID", join(&c.proxy_uids)),
        ("PROXY_GID", join(&c.proxy_gids)),
        ("INBOUND_INTERCEPTION_MODE", mode.to_string()),
        ("INBOUND_TPROXY_MARK", c.tproxy_mark.to_string()),
        ("INBOUND_TPROXY_ROUTE_TABLE", c.tproxy_route_table.to_string()),
        ("INBOUND_PORTS_INCLUDE", inbound),
        ("INBOUND_PORTS_EXCLUDE", ports(&c.inbound_exclude_ports)),
        ("OUTBOUND_OWNER_GROUPS_INCLUDE", groups_include),
        ("OUTBOUND_OWNER_GROUPS_EXCLUDE", groups_exclude),
        ("OUTBOUND_IP_RANGES_INCLUDE", include),
        ("OUTBOUND_IP_RANGES_EXCLUDE", exclude),
        ("OUTBOUND_PORTS_INCLUDE", ports(&c.outbound_ports_include)),
        ("OUTBOUND_PORTS_EXCLUDE", ports(&c.outbound_ports_exclude)),
        ("KUBE_VIRT_INTERFACES", join(&c.kube_virt_interfaces)),
        ("ENABLE_INBOUND_IPV6", c.enable_ipv6.to_string()),
        ("DUAL_STACK", c.dual_stack.to_string()),
        ("DNS_CAPTURE", c.redirect_dns_requested.to_string()),
        ("DROP_INVALID", c.drop_invalid.to_string()),
        ("CAPTURE_ALL_DNS", c.capture_all_dns.to_string()),
        ("DNS_SERVERS", format!("[{dns_v4}],[{dns_v6}]")),
        ("NETWORK_NAMESPACE", c.network_namespace.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
        ("CNI_MODE", c.cni_mode.to_string()),
        ("EXCLUDE_INTERFACES", join(&c.exclude_interfaces)),
        ("RECONCILE", c.reconcile.to_string()),
        ("CLEANUP_ONLY", c.cleanup_only.to_string()),
        ("FORCE_APPLY", c.force_apply.to_string()),
        ("NATIVE_NFTABLES", c.native_nftables.to_string()),
        ("PROBE_TIMEOUT", format_go_duration(c.probe_timeout)),
    ];
    let mut out = String::new();
    for (key, value) in lines {
        let _ = writeln!(out, "{key}={value}");
    }
    let forced = match c.force_iptables_binary {
        None => "",
        Some(crate::config::IptablesBackend::Legacy) => "legacy",
        Some(crate::config::IptablesBackend::Nft) => "nft",
    };
    let _ = writeln!(out, "FORCE_IPTABLES_BINARY={forced}");
    out
}
