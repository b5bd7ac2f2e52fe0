//! Inbound capture: kube-virt short-circuit, drop-invalid, the fixed redirect chains and the
//! inbound port selection (REDIRECT in nat, or TPROXY in mangle).

use super::{Chain, PlanBuilder, RuleKind, Table, Verdict};
use crate::config::{Config, InboundPorts};

/// Traffic arriving from a KubeVirt VM interface is the VM's outbound traffic, so it must not be
/// captured as inbound; inserted at the top so it wins over everything else.
pub(super) fn kube_virt_short_circuit(plan: &mut PlanBuilder, config: &Config) {
    for iface in &config.kube_virt_interfaces {
        plan.insert(
            Table::Nat,
            Chain::Prerouting,
            1,
            RuleKind::InInterface { iface: iface.clone(), verdict: Verdict::Return },
        );
    }
}

pub(super) fn drop_invalid(plan: &mut PlanBuilder, config: &Config) {
    if !config.drop_invalid {
        return;
    }
    plan.append(Table::Mangle, Chain::Prerouting, RuleKind::InvalidState(Verdict::Jump(Chain::IstioDrop)));
    plan.append(Table::Mangle, Chain::IstioDrop, RuleKind::Always(Verdict::Drop));
}

/// The tunnel (HBONE) port is never captured; the two redirect chains exist in every mode.
pub(super) fn fixed_chains(plan: &mut PlanBuilder, config: &Config) {
    plan.append(
        Table::Nat,
        Chain::IstioInbound,
        RuleKind::TcpPort { port: config.inbound_tunnel_port.into(), verdict: Verdict::Return },
    );
    plan.append(Table::Nat, Chain::IstioRedirect, RuleKind::RedirectTcp(config.proxy_port));
    plan.append(Table::Nat, Chain::IstioInRedirect, RuleKind::RedirectTcp(config.inbound_capture_port));
}

pub(super) fn capture(plan: &mut PlanBuilder, config: &Config) {
    if config.inbound_ports == InboundPorts::None {
        return;
    }
    let tproxy = config.is_tproxy();
    let table = if tproxy {
        plan.append(Table::Mangle, Chain::IstioDivert, RuleKind::SetMark(config.tproxy_mark));
        plan.append(Table::Mangle, Chain::IstioDivert, RuleKind::Always(Verdict::Accept));
        plan.append_versioned(Table::Mangle, Chain::IstioTproxy, |family| RuleKind::Tproxy {
            not_destination: super::addresses::loopback(config, family),
            port: config.inbound_capture_port,
            mark: config.tproxy_mark,
        });
        Table::Mangle
    } else {
        Table::Nat
    };
    plan.append(table, Chain::Prerouting, RuleKind::Tcp(Verdict::Jump(Chain::IstioInbound)));

    let divert = Verdict::Jump(Chain::IstioDivert);
    let tproxy_jump = Verdict::Jump(Chain::IstioTproxy);
    let in_redirect = Verdict::Jump(Chain::IstioInRedirect);
    match &config.inbound_ports {
        InboundPorts::None => {}
        InboundPorts::All => {
            for port in &config.inbound_exclude_ports {
                plan.append(table, Chain::IstioInbound, RuleKind::TcpPort { port: *port, verdict: Verdict::Return });
            }
            if tproxy {
                plan.append(table, Chain::IstioInbound, RuleKind::TcpEstablished { port: None, verdict: divert });
                plan.append(table, Chain::IstioInbound, RuleKind::Tcp(tproxy_jump));
            } else {
                plan.append(table, Chain::IstioInbound, RuleKind::Tcp(in_redirect));
            }
        }
        InboundPorts::Listed(ports) => {
            for port in ports {
                if tproxy {
                    plan.append(
                        table,
                        Chain::IstioInbound,
                        RuleKind::TcpEstablished { port: Some(*port), verdict: divert },
                    );
                    plan.append(table, Chain::IstioInbound, RuleKind::TcpPort { port: *port, verdict: tproxy_jump });
                } else {
                    plan.append(table, Chain::IstioInbound, RuleKind::TcpPort { port: *port, verdict: in_redirect });
                }
            }
        }
    }
}
