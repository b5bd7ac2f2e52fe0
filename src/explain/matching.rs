//! What one installed rule does to the first packet of a new connection: whether its matches
//! hold, and what its target does. Matches follow the kernel's modules (`xt_owner`, `xt_mark`,
//! `xt_conntrack`, `nft_meta`, …) for the state such a packet can be in.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ruleset::Installed;
use crate::config::{IfaceName, OwnerId, PortSpec};
use crate::plan::{Owner, Proto, RuleKind, ServerMatch, UdpPortMatch, Verdict, AGENT_DNS_PORT, DNS_PORT};

/// The packet as the rules see it at one point of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketState {
    pub proto: Proto,
    /// Unknown when not described (then no source match holds).
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dst: IpAddr,
    pub dport: u16,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// The owning socket's uid and gid: locally generated packets only, and only at OUTPUT.
    pub owner: Option<(u32, u32)>,
    pub mark: u32,
    pub ct_mark: u32,
    /// The conntrack zone a raw-table rule picked before the connection was tracked.
    pub ct_zone: Option<u16>,
    /// Whether conntrack already holds the connection (after the first hook's conntrack step).
    pub tracked: bool,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Verdict(Verdict),
    /// Non-terminal: the packet (or its connection) was changed; evaluation goes on.
    Continue,
    /// nat REDIRECT to a local port (ends the table's traversal).
    Redirect(u16),
    /// TPROXY to a local port, marking the packet (ends the table's traversal).
    Tproxy {
        port: u16,
        mark: u32,
    },
}

/// Resolves owner names the way iptables does when it loads a rule (`/etc/passwd`, `/etc/group`).
pub trait OwnerIds {
    fn uid(&self, id: &OwnerId) -> Option<u32>;
    fn gid(&self, id: &OwnerId) -> Option<u32>;
}

/// Evaluates `rule` against `packet`; on a match applies its side effects and says what follows.
pub fn evaluate(rule: Installed<'_>, packet: &mut PacketState, ids: &dyn OwnerIds) -> Option<Action> {
    let kind = match rule {
        Installed::Planned(rule) => &rule.kind,
        Installed::Ipv6Guard => return packet.dst.is_ipv6().then_some(Action::Verdict(Verdict::Return)),
    };
    let p = &*packet;
    let tcp = p.proto == Proto::Tcp;
    let udp = p.proto == Proto::Udp;
    let out_lo = p.oif.as_deref() == Some("lo");
    let in_lo = p.iif.as_deref() == Some("lo");
    let owned = |owner: &Owner| owner_matches(owner, p.owner, ids);
    let verdict = |holds: bool, v: &Verdict| holds.then_some(Action::Verdict(*v));
    match kind {
        RuleKind::Always(v) => verdict(true, v),
        RuleKind::InInterface { iface, verdict: v } => verdict(iface_matches(iface, p.iif.as_deref()), v),
        RuleKind::OutInterface { iface, verdict: v } => verdict(iface_matches(iface, p.oif.as_deref()), v),
        RuleKind::InInterfaceToDestination { iface, destination, verdict: v } => {
            verdict(iface_matches(iface, p.iif.as_deref()) && within(destination, p.dst), v)
        }
        // A new connection's first packet is NEW, never INVALID, RELATED or ESTABLISHED.
        RuleKind::InvalidState(_) | RuleKind::TcpEstablished { .. } => None,
        RuleKind::Tcp(v) => verdict(tcp, v),
        RuleKind::TcpPort { port, verdict: v } => verdict(tcp && port_in(port, p.dport), v),
        RuleKind::OutboundPort { proto, port, verdict: v } => verdict(p.proto == *proto && port_in(port, p.dport), v),
        RuleKind::RedirectTcp(port) => tcp.then_some(Action::Redirect(port.0)),
        RuleKind::SetMark(mark) => {
            packet.mark = *mark;
            Some(Action::Continue)
        }
        // With a proxy listening on the port (what explain assumes), both iptables and nft
        // hand the packet to it; without one, iptables drops it and nft goes on.
        RuleKind::Tproxy { not_destination, port, mark } => {
            (tcp && outside(not_destination, p.dst)).then_some(Action::Tproxy { port: port.0, mark: *mark })
        }
        RuleKind::LoopbackOutFrom { source, verdict: v } => verdict(out_lo && source_within(source, p.src), v),
        RuleKind::ProxyLoopbackToInbound { owner, not_destination, tunnel_port, exclude_dns, verdict: v } => {
            let port_ok = p.dport != tunnel_port.0 && !(*exclude_dns && p.dport == DNS_PORT);
            verdict(out_lo && tcp && outside(not_destination, p.dst) && port_ok && owned(owner), v)
        }
        RuleKind::LoopbackNotOwner { owner, exclude_dns, verdict: v } => {
            let dns_ok = !*exclude_dns || (tcp && p.dport != DNS_PORT);
            verdict(out_lo && dns_ok && p.owner.is_some() && !owned(owner), v)
        }
        RuleKind::OwnerIs { owner, verdict: v } => verdict(owned(owner), v),
        RuleKind::NotInGroups { groups, verdict: v } => {
            let in_any = groups.iter().any(|g| owned(&Owner::Gid(g.clone())));
            verdict(p.owner.is_some() && !in_any, v)
        }
        RuleKind::DnsRedirect { proto, server } => {
            let server_ok = server.map_or(true, |s| s == p.dst);
            (p.proto == *proto && p.dport == DNS_PORT && server_ok).then_some(Action::Redirect(AGENT_DNS_PORT))
        }
        RuleKind::UdpOwnerZone { port, owner, zone } => {
            let holds = udp && udp_port_matches(*port, p) && owned(owner);
            holds.then(|| set_zone(packet, *zone))
        }
        RuleKind::UdpServerZone { port, server, zone } => {
            let server_ok = match server {
                ServerMatch::Any => true,
                ServerMatch::Destination(addr) => *addr == p.dst,
                ServerMatch::Source(addr) => Some(*addr) == p.src,
            };
            (udp && udp_port_matches(*port, p) && server_ok).then(|| set_zone(packet, *zone))
        }
        RuleKind::Destination { destination, verdict: v } => verdict(within(destination, p.dst), v),
        RuleKind::SaveMark(mark) => (tcp && p.mark == *mark).then(|| {
            packet.ct_mark = packet.mark;
            Action::Continue
        }),
        RuleKind::LoopbackOutMarked { mark, verdict: v } => verdict(tcp && out_lo && p.mark == *mark, v),
        RuleKind::MarkProxyLoopback { owner, not_destination, mark } => {
            (tcp && out_lo && outside(not_destination, p.dst) && owned(owner)).then(|| {
                packet.mark = *mark;
                Action::Continue
            })
        }
        RuleKind::RestoreMark(mark) => (tcp && p.ct_mark == *mark).then(|| {
            packet.mark = packet.ct_mark;
            Action::Continue
        }),
        RuleKind::TcpMarked { mark, verdict: v } => verdict(tcp && p.mark == *mark, v),
        RuleKind::LoopbackInFrom { source, verdict: v } => verdict(tcp && in_lo && source_within(source, p.src), v),
        RuleKind::LoopbackInNotMarked { mark, verdict: v } => verdict(tcp && in_lo && p.mark != *mark, v),
    }
}

/// `CT --zone` / `ct zone set` only shape a connection conntrack has not seen yet, and the first
/// such rule wins: it attaches a template, and both targets leave a packet with one alone.
fn set_zone(packet: &mut PacketState, zone: u16) -> Action {
    if !packet.tracked && packet.ct_zone.is_none() {
        packet.ct_zone = Some(zone);
    }
    Action::Continue
}

fn udp_port_matches(port: UdpPortMatch, p: &PacketState) -> bool {
    match port {
        UdpPortMatch::Destination(n) => p.dport == n,
        UdpPortMatch::Source(n) => p.sport == Some(n),
    }
}

/// `-i eth+` / `iifname eth+`: a trailing `+` matches any name with that prefix.
pub fn iface_matches(iface: &IfaceName, actual: Option<&str>) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    match iface.as_str().strip_suffix('+') {
        Some(prefix) => actual.starts_with(prefix),
        None => actual == iface.as_str(),
    }
}

fn port_in(spec: &PortSpec, port: u16) -> bool {
    match *spec {
        PortSpec::Single(p) => p == port,
        PortSpec::Range(low, high) => (low..=high).contains(&port),
    }
}

/// `-d NET`: an address of the other family never matches (nft's `ip daddr` implies IPv4).
fn within(net: &IpNet, addr: IpAddr) -> bool {
    net.contains(&addr)
}

/// `! -d NET` / `ip daddr != NET`: still only for packets of the net's family.
fn outside(net: &IpNet, addr: IpAddr) -> bool {
    matches!((net, addr), (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))) && !net.contains(&addr)
}

fn source_within(net: &IpNet, src: Option<IpAddr>) -> bool {
    src.is_some_and(|src| net.contains(&src))
}

/// A socket's owner; a name is compared by the id it resolves to, and one that does not
/// resolve never matches (iptables would refuse to load such a rule).
fn owner_matches(owner: &Owner, socket: Option<(u32, u32)>, ids: &dyn OwnerIds) -> bool {
    let Some((uid, gid)) = socket else {
        return false;
    };
    match owner {
        Owner::Uid(id) => ids.uid(id) == Some(uid),
        Owner::Gid(id) => ids.gid(id) == Some(gid),
    }
}
