//! DNS capture for istio-agent's DNS proxy: nat redirects to 15053 and raw conntrack zones that
//! keep the app↔agent and agent↔upstream legs of a query apart.

use std::net::IpAddr;

use super::{
    Chain, Families, Family, Owner, PlanBuilder, Proto, RuleKind, ServerMatch, Table, UdpPortMatch, Verdict,
    AGENT_DNS_PORT, DNS_PORT, ZONE_APP_SIDE, ZONE_UPSTREAM_SIDE,
};
use crate::config::{Config, DnsCapture};

pub(super) fn capture(plan: &mut PlanBuilder, config: &Config) {
    let (capture_all, v4, v6) = match &config.dns {
        DnsCapture::Off => return,
        DnsCapture::All => (true, &[][..], &[][..]),
        DnsCapture::Servers { v4, v6 } => (false, &v4[..], &v6[..]),
    };
    let servers: Vec<IpAddr> = v4.iter().copied().map(IpAddr::V4).chain(v6.iter().copied().map(IpAddr::V6)).collect();
    // The jumps are per family: a family with no server to capture gets none.
    let with_servers = Families { v4: capture_all || !v4.is_empty(), v6: capture_all || !v6.is_empty() };
    let dns_chain = Verdict::Jump(Chain::IstioOutputDns);

    plan.append(Table::Raw, Chain::Output, RuleKind::Always(dns_chain));
    plan.append_for(with_servers, Table::Nat, Chain::IstioOutput, RuleKind::Always(dns_chain));

    for proto in [Proto::Tcp, Proto::Udp] {
        if capture_all {
            plan.append(Table::Nat, Chain::IstioOutputDns, RuleKind::DnsRedirect { proto, server: None });
        }
        for server in &servers {
            plan.append_for(
                Families::only(Family::of_addr(server)),
                Table::Nat,
                Chain::IstioOutputDns,
                RuleKind::DnsRedirect { proto, server: Some(*server) },
            );
        }
    }

    let uids = config.proxy_uids.iter().map(|u| Owner::Uid(u.clone()));
    for owner in uids.chain(config.proxy_gids.iter().map(|g| Owner::Gid(g.clone()))) {
        for (port, zone) in [
            (UdpPortMatch::Destination(DNS_PORT), ZONE_APP_SIDE),
            (UdpPortMatch::Source(AGENT_DNS_PORT), ZONE_UPSTREAM_SIDE),
        ] {
            plan.append(Table::Raw, Chain::IstioOutputDns, RuleKind::UdpOwnerZone { port, owner: owner.clone(), zone });
        }
    }

    let query = |server| RuleKind::UdpServerZone {
        port: UdpPortMatch::Destination(DNS_PORT),
        server,
        zone: ZONE_UPSTREAM_SIDE,
    };
    let reply = |server| RuleKind::UdpServerZone { port: UdpPortMatch::Source(DNS_PORT), server, zone: ZONE_APP_SIDE };
    let inbound_jump = RuleKind::Always(Verdict::Jump(Chain::IstioInbound));
    if capture_all {
        plan.append(Table::Raw, Chain::Prerouting, inbound_jump);
        plan.append(Table::Raw, Chain::IstioOutputDns, query(ServerMatch::Any));
        plan.append(Table::Raw, Chain::IstioInbound, reply(ServerMatch::Any));
        return;
    }
    plan.append_for(with_servers, Table::Raw, Chain::Prerouting, inbound_jump);
    for server in &servers {
        let families = Families::only(Family::of_addr(server));
        plan.append_for(families, Table::Raw, Chain::IstioOutputDns, query(ServerMatch::Destination(*server)));
        plan.append_for(families, Table::Raw, Chain::IstioInbound, reply(ServerMatch::Source(*server)));
    }
}
