//! The vocabulary of the plan: families, tables, chains, positions and rule kinds.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{IfaceName, OwnerId, Port, PortSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a prefix (an IPv4-mapped IPv6 prefix is IPv6, as upstream treats it).
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// The families a rule is emitted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };

    pub fn only(family: Family) -> Families {
        Families { v4: family == Family::V4, v6: family == Family::V6 }
    }

    pub fn contains(self, family: Family) -> bool {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// Declared in byte order of their iptables names, which is the order tables are rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub fn iptables_name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Prerouting,
    Output,
    IstioInbound,
    IstioRedirect,
    IstioInRedirect,
    IstioOutput,
    IstioOutputDns,
    IstioDivert,
    IstioTproxy,
    IstioDrop,
}

impl Chain {
    pub fn iptables_name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioOutputDns => "ISTIO_OUTPUT_DNS",
            Chain::IstioDivert => "ISTIO_DIVERT",
            Chain::IstioTproxy => "ISTIO_TPROXY",
            Chain::IstioDrop => "ISTIO_DROP",
        }
    }

    /// nft names: base chains after their hook, regular chains as the iptables name in kebab case.
    pub fn nft_name(self) -> &'static str {
        match self {
            Chain::Prerouting => "prerouting",
            Chain::Output => "output",
            Chain::IstioInbound => "istio-inbound",
            Chain::IstioRedirect => "istio-redirect",
            Chain::IstioInRedirect => "istio-in-redirect",
            Chain::IstioOutput => "istio-output",
            Chain::IstioOutputDns => "istio-output-dns",
            Chain::IstioDivert => "istio-divert",
            Chain::IstioTproxy => "istio-tproxy",
            Chain::IstioDrop => "istio-drop",
        }
    }
}

/// Append, or insert at a 1-based iptables position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Append,
    Insert(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Return,
    Accept,
    Drop,
    Jump(Chain),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A socket owner match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Uid(OwnerId),
    Gid(OwnerId),
}

/// Which side of a UDP flow a conntrack-zone rule matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpPortMatch {
    Destination(u16),
    Source(u16),
}

/// A DNS server a rule is limited to: the destination of queries or the source of replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMatch {
    Any,
    Destination(IpAddr),
    Source(IpAddr),
}

/// The port istio-agent's DNS proxy listens on.
pub const AGENT_DNS_PORT: u16 = 15053;
pub const DNS_PORT: u16 = 53;
/// The mark the TPROXY tail puts on the proxy's own loopback traffic.
pub const OUTBOUND_MARK: u32 = 1338;
/// Conntrack zones separating the app↔agent and agent↔upstream legs of a DNS query.
pub const ZONE_APP_SIDE: u16 = 1;
pub const ZONE_UPSTREAM_SIDE: u16 = 2;

/// One rule shape. Each variant lists the iptables and nft text it renders to; renderers must
/// reproduce upstream's token order, which differs between shapes, so shapes are kept distinct
/// even where they mean nearly the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    /// `-j V` / `counter V`
    Always(Verdict),
    /// `-i X -j V` / `iifname X counter V`
    InInterface { iface: IfaceName, verdict: Verdict },
    /// `-o X -j V` / `oifname X counter V`
    OutInterface { iface: IfaceName, verdict: Verdict },
    /// `-i K -d C -j V` / `iifname K ip daddr C counter V`
    InInterfaceToDestination { iface: IfaceName, destination: IpNet, verdict: Verdict },
    /// `-m conntrack --ctstate INVALID -j V` / `meta l4proto tcp ct state invalid counter V`
    InvalidState(Verdict),
    /// `-p tcp -j V` / `meta l4proto tcp counter V`
    Tcp(Verdict),
    /// `-p tcp --dport X -j V` / `meta l4proto tcp tcp dport X counter V`
    TcpPort { port: PortSpec, verdict: Verdict },
    /// `-p P --dport X -j V` / `P dport X counter V` (outbound port lists)
    OutboundPort { proto: Proto, port: PortSpec, verdict: Verdict },
    /// `-p tcp -j REDIRECT --to-ports P` / `meta l4proto tcp counter redirect to :P`
    RedirectTcp(Port),
    /// `-j MARK --set-mark M` / `counter meta mark set M`
    SetMark(u32),
    /// `! -d A -p tcp -j TPROXY --tproxy-mark M/0xffffffff --on-port Z` /
    /// `meta l4proto tcp ip daddr != A tproxy ip to :Z meta mark set M counter accept`
    Tproxy { not_destination: IpNet, port: Port, mark: u32 },
    /// `-p tcp [--dport X] -m conntrack --ctstate RELATED,ESTABLISHED -j V` /
    /// `meta l4proto tcp ct state related,established [tcp dport X] counter V`
    TcpEstablished { port: Option<PortSpec>, verdict: Verdict },
    /// `-o lo -s S -j V` / `oifname lo ip saddr S counter V`
    LoopbackOutFrom { source: IpNet, verdict: Verdict },
    /// The proxy talking to itself over loopback to a non-loopback address goes back inbound:
    /// `-o lo ! -d A -p tcp ! --dport T [-m multiport ! --dports 53,T] -m owner --uid-owner U -j V` /
    /// `oifname lo meta l4proto tcp ip daddr != A tcp dport != T|{ 53, T } skuid U counter V`
    ProxyLoopbackToInbound {
        owner: Owner,
        not_destination: IpNet,
        tunnel_port: Port,
        exclude_dns: bool,
        verdict: Verdict,
    },
    /// `-o lo [-p tcp ! --dport 53] -m owner ! --uid-owner U -j V` /
    /// `oifname lo [meta l4proto tcp tcp dport != 53] skuid != U counter V`
    LoopbackNotOwner { owner: Owner, exclude_dns: bool, verdict: Verdict },
    /// `-m owner --uid-owner U -j V` / `skuid U counter V`
    OwnerIs { owner: Owner, verdict: Verdict },
    /// `-m owner ! --gid-owner G1 -m owner ! --gid-owner G2 … -j V` / `skgid != G1 skgid != G2 … counter V`
    NotInGroups { groups: Vec<OwnerId>, verdict: Verdict },
    /// `-p P --dport 53 [-d S] -j REDIRECT --to-port(s) 15053` /
    /// `[ip daddr S] P dport 53 counter redirect to :15053` (TCP without a server: `meta l4proto tcp tcp dport 53`)
    DnsRedirect { proto: Proto, server: Option<IpAddr> },
    /// `-p udp --dport|--sport N -m owner --uid-owner U -j CT --zone Z` /
    /// `udp dport|sport N meta skuid U counter ct zone set Z`
    UdpOwnerZone { port: UdpPortMatch, owner: Owner, zone: u16 },
    /// `-p udp --dport|--sport 53 [-d|-s S] -j CT --zone Z` /
    /// `udp dport|sport 53 [ip daddr|saddr S] counter ct zone set Z`
    UdpServerZone { port: UdpPortMatch, server: ServerMatch, zone: u16 },
    /// `-d C -j V` / `ip daddr C counter V`
    Destination { destination: IpNet, verdict: Verdict },
    /// `-p tcp -m mark --mark M -j CONNMARK --save-mark` / `meta l4proto tcp mark M counter ct mark set mark`
    SaveMark(u32),
    /// `-p tcp -o lo -m mark --mark M -j V` / `oifname lo meta l4proto tcp mark M counter V`
    LoopbackOutMarked { mark: u32, verdict: Verdict },
    /// `! -d A -p tcp -o lo -m owner --uid-owner U -j MARK --set-mark 1338` /
    /// `oifname lo meta l4proto tcp ip daddr != A skuid U counter meta mark set 1338`
    MarkProxyLoopback { owner: Owner, not_destination: IpNet, mark: u32 },
    /// `-p tcp -m connmark --mark M -j CONNMARK --restore-mark` / `meta l4proto tcp ct mark M counter meta mark set ct mark`
    RestoreMark(u32),
    /// `-p tcp -m mark --mark M -j V` / `meta l4proto tcp mark M counter V`
    TcpMarked { mark: u32, verdict: Verdict },
    /// `-p tcp -s S -i lo -j V` / `iifname lo meta l4proto tcp ip saddr S counter V`
    LoopbackInFrom { source: IpNet, verdict: Verdict },
    /// `-p tcp -i lo -m mark ! --mark M -j V` / `iifname lo meta l4proto tcp mark != M counter V`
    LoopbackInNotMarked { mark: u32, verdict: Verdict },
}

impl RuleKind {
    /// The address family a rule's own addresses tie it to, if any. nft renders rules without
    /// one once for both families.
    pub fn address_family(&self) -> Option<Family> {
        match self {
            RuleKind::InInterfaceToDestination { destination: net, .. }
            | RuleKind::Tproxy { not_destination: net, .. }
            | RuleKind::LoopbackOutFrom { source: net, .. }
            | RuleKind::ProxyLoopbackToInbound { not_destination: net, .. }
            | RuleKind::Destination { destination: net, .. }
            | RuleKind::MarkProxyLoopback { not_destination: net, .. }
            | RuleKind::LoopbackInFrom { source: net, .. } => Some(Family::of_net(net)),
            RuleKind::DnsRedirect { server: Some(addr), .. } => Some(Family::of_addr(addr)),
            RuleKind::UdpServerZone { server: ServerMatch::Destination(addr) | ServerMatch::Source(addr), .. } => {
                Some(Family::of_addr(addr))
            }
            _ => None,
        }
    }
}

/// A planned rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub families: Families,
    pub table: Table,
    pub chain: Chain,
    pub position: Position,
    pub kind: RuleKind,
}
