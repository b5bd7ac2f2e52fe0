//! Outbound capture: excluded interfaces, the proxy's own traffic, owner groups and the
//! destination (CIDR and port) selection.

use ipnet::IpNet;

use super::addresses::{inbound_passthrough_source, loopback};
use super::{Chain, Families, Family, Owner, PlanBuilder, Proto, RuleKind, Table, Verdict};
use crate::config::{Config, DnsCapture, OutboundCidrs, OwnerGroups};

pub(super) fn exclude_interfaces(plan: &mut PlanBuilder, config: &Config) {
    let mut tables = vec![Table::Nat];
    if config.is_tproxy() {
        tables.push(Table::Mangle);
    }
    for table in tables {
        for iface in &config.exclude_interfaces {
            let (iface, verdict) = (iface.clone(), Verdict::Return);
            plan.append(table, Chain::Prerouting, RuleKind::InInterface { iface: iface.clone(), verdict });
            plan.append(table, Chain::Output, RuleKind::OutInterface { iface, verdict });
        }
    }
}

/// The jump into ISTIO_OUTPUT and everything that decides by port, source and socket owner.
pub(super) fn owner_rules(plan: &mut PlanBuilder, config: &Config) {
    let (nat, output) = (Table::Nat, Chain::IstioOutput);
    plan.append(nat, Chain::Output, RuleKind::Always(Verdict::Jump(output)));
    for port in &config.outbound_ports_exclude {
        for proto in [Proto::Tcp, Proto::Udp] {
            plan.append(nat, output, RuleKind::OutboundPort { proto, port: *port, verdict: Verdict::Return });
        }
    }
    plan.append_versioned(nat, output, |family| RuleKind::LoopbackOutFrom {
        source: inbound_passthrough_source(family),
        verdict: Verdict::Return,
    });

    let dns = config.dns != DnsCapture::Off;
    // Only the include list counts, and a loopback range of either family affects both.
    let has_loopback = config.outbound_include.has_loopback();
    // Only the uid rule spares DNS from the loopback redirect; upstream's gid rule never does.
    let owners = config.proxy_uids.iter().map(|u| (Owner::Uid(u.clone()), dns));
    let owners = owners.chain(config.proxy_gids.iter().map(|g| (Owner::Gid(g.clone()), false)));
    for (owner, exclude_dns) in owners {
        plan.append_versioned(nat, output, |family| RuleKind::ProxyLoopbackToInbound {
            owner: owner.clone(),
            not_destination: loopback(config, family),
            tunnel_port: config.inbound_tunnel_port,
            exclude_dns,
            verdict: Verdict::Jump(Chain::IstioInRedirect),
        });
        if !has_loopback {
            plan.append(
                nat,
                output,
                RuleKind::LoopbackNotOwner { owner: owner.clone(), exclude_dns: dns, verdict: Verdict::Return },
            );
        }
        plan.append(nat, output, RuleKind::OwnerIs { owner, verdict: Verdict::Return });
    }

    match &config.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                plan.append(
                    nat,
                    output,
                    RuleKind::OwnerIs { owner: Owner::Gid(group.clone()), verdict: Verdict::Return },
                );
            }
        }
        OwnerGroups::Only(groups) if groups.is_empty() => {
            plan.append(nat, output, RuleKind::Always(Verdict::Return));
        }
        OwnerGroups::Only(groups) => {
            plan.append(nat, output, RuleKind::NotInGroups { groups: groups.clone(), verdict: Verdict::Return });
        }
    }
}

/// Loopback, excluded and included destinations, then outbound ports.
pub(super) fn destinations(plan: &mut PlanBuilder, config: &Config) {
    let (nat, output) = (Table::Nat, Chain::IstioOutput);
    plan.append_versioned(nat, output, |family| RuleKind::Destination {
        destination: loopback(config, family),
        verdict: Verdict::Return,
    });
    let excluded = config.outbound_exclude.v4.iter().map(|n| IpNet::V4(*n));
    for destination in excluded.chain(config.outbound_exclude.v6.iter().map(|n| IpNet::V6(*n))) {
        plan.append_for(
            Families::only(Family::of_net(&destination)),
            nat,
            output,
            RuleKind::Destination { destination, verdict: Verdict::Return },
        );
    }
    let redirect = Verdict::Jump(Chain::IstioRedirect);
    for port in &config.outbound_ports_include {
        plan.append(nat, output, RuleKind::OutboundPort { proto: Proto::Tcp, port: *port, verdict: redirect });
    }
    match &config.outbound_include {
        OutboundCidrs::All => {
            // Upstream handles each family in turn; with both the same, one pass for both suffices.
            plan.append(nat, output, RuleKind::Always(redirect));
            for iface in &config.kube_virt_interfaces {
                plan.insert(
                    nat,
                    Chain::Prerouting,
                    1,
                    RuleKind::InInterface { iface: iface.clone(), verdict: redirect },
                );
            }
        }
        OutboundCidrs::Only(lists) => {
            let included = lists.v4.iter().map(|n| IpNet::V4(*n));
            for destination in included.chain(lists.v6.iter().map(|n| IpNet::V6(*n))) {
                let families = Families::only(Family::of_net(&destination));
                for iface in &config.kube_virt_interfaces {
                    let kind =
                        RuleKind::InInterfaceToDestination { iface: iface.clone(), destination, verdict: redirect };
                    plan.push(families, nat, Chain::Prerouting, super::Position::Insert(1), kind);
                }
                plan.append_for(families, nat, output, RuleKind::Destination { destination, verdict: redirect });
            }
        }
    }
}
