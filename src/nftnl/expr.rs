//! nf_tables expressions for each rule shape, in the order and with the implicit protocol
//! checks that `nft` 1.0.x generates for the text in `src/render/nft.rs` (checked expression by
//! expression against `nft --debug=netlink list ruleset` in `tests/kernel/nftnl.rs`).
//!
//! Registers: everything goes through `NFT_REG_1` (value 1), verdicts through `NFT_REG_VERDICT`
//! (0), as nft does for single-field matches.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ids::{IdResolver, UnknownName};
use super::wire::Attr;
use crate::config::PortSpec;
use crate::plan::{Owner, Proto, RuleKind, ServerMatch, UdpPortMatch, Verdict, AGENT_DNS_PORT, DNS_PORT};

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

// NFTA_DATA_*
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
// NFTA_VERDICT_*
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;
// Verdict codes: NF_DROP, NF_ACCEPT, NFT_JUMP, NFT_RETURN.
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;

// enum nft_meta_keys
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_SKUID: u32 = 10;
const META_SKGID: u32 = 11;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
// enum nft_ct_keys
const CT_STATE: u32 = 0;
const CT_MARK: u32 = 3;
const CT_ZONE: u32 = 17;
// enum nft_cmp_ops / nft_range_ops
const OP_EQ: u32 = 0;
const OP_NEQ: u32 = 1;
const OP_LTE: u32 = 3;
const OP_GTE: u32 = 5;
// enum nft_payload_bases
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
// ct state bits (NF_CT_STATE_*_BIT): invalid, established, related.
const CT_STATE_INVALID: u32 = 1;
const CT_STATE_ESTABLISHED_RELATED: u32 = 2 | 4;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: nft sets it for `redirect to :port`.
const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const IFNAMSIZ: usize = 16;

/// The name of the anonymous set a rule creates; the kernel replaces `%d` with a free number.
pub(crate) const ANONYMOUS_SET_NAME: &str = "__set%d";

/// One expression: its kernel name and attributes (inside `NFTA_EXPR_DATA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expr {
    pub name: &'static str,
    pub attrs: Vec<Attr>,
}

/// An anonymous constant set a rule looks up (`tcp dport != { 53, 15008 }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnonymousSet {
    /// Keys in network byte order.
    pub elements: Vec<Vec<u8>>,
}

/// A rule as nf_tables expressions, plus the set it needs created first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleExprs {
    pub exprs: Vec<Expr>,
    pub set: Option<AnonymousSet>,
}

fn data(kind: u16, bytes: Vec<u8>) -> Attr {
    Attr::Nested(kind, vec![Attr::Bytes(DATA_VALUE, bytes)])
}

fn meta_load(key: u32) -> Expr {
    Expr { name: "meta", attrs: vec![Attr::be32(2, key), Attr::be32(1, REG_1)] }
}

fn meta_set(key: u32) -> Expr {
    Expr { name: "meta", attrs: vec![Attr::be32(2, key), Attr::be32(3, REG_1)] }
}

fn ct_load(key: u32) -> Expr {
    Expr { name: "ct", attrs: vec![Attr::be32(2, key), Attr::be32(1, REG_1)] }
}

fn ct_set(key: u32) -> Expr {
    Expr { name: "ct", attrs: vec![Attr::be32(2, key), Attr::be32(4, REG_1)] }
}

fn cmp(op: u32, value: Vec<u8>) -> Expr {
    Expr { name: "cmp", attrs: vec![Attr::be32(1, REG_1), Attr::be32(2, op), data(3, value)] }
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    Expr {
        name: "payload",
        attrs: vec![Attr::be32(1, REG_1), Attr::be32(2, base), Attr::be32(3, offset), Attr::be32(4, len)],
    }
}

fn bitwise(mask: Vec<u8>) -> Expr {
    let len = mask.len() as u32;
    let xor = vec![0; mask.len()];
    Expr {
        name: "bitwise",
        attrs: vec![Attr::be32(1, REG_1), Attr::be32(2, REG_1), Attr::be32(3, len), data(4, mask), data(5, xor)],
    }
}

fn range(op: u32, from: Vec<u8>, to: Vec<u8>) -> Expr {
    Expr { name: "range", attrs: vec![Attr::be32(1, REG_1), Attr::be32(2, op), data(3, from), data(4, to)] }
}

fn immediate(value: Vec<u8>) -> Expr {
    Expr { name: "immediate", attrs: vec![Attr::be32(1, REG_1), data(2, value)] }
}

fn counter() -> Expr {
    Expr { name: "counter", attrs: Vec::new() }
}

fn verdict(v: Verdict) -> Expr {
    let (code, chain) = match v {
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Jump(chain) => (NFT_JUMP, Some(chain.nft_name())),
    };
    let mut inner = vec![Attr::Bytes(VERDICT_CODE, code.to_be_bytes().to_vec())];
    if let Some(chain) = chain {
        inner.push(Attr::string(VERDICT_CHAIN, chain));
    }
    Expr {
        name: "immediate",
        attrs: vec![Attr::be32(1, REG_VERDICT), Attr::Nested(2, vec![Attr::Nested(DATA_VERDICT, inner)])],
    }
}

/// Builds one rule's expressions while tracking the protocol context, so that a header field
/// gets nft's implicit dependency (`meta nfproto`, `meta l4proto`) only where nothing before it
/// established the protocol.
#[derive(Default)]
struct Builder {
    exprs: Vec<Expr>,
    nfproto: Option<u8>,
    l4proto: Option<u8>,
    set: Option<AnonymousSet>,
}

#[derive(Clone, Copy)]
enum Field {
    Source,
    Destination,
}

impl Builder {
    fn push(&mut self, expr: Expr) -> &mut Self {
        self.exprs.push(expr);
        self
    }

    /// `meta l4proto tcp` as written in the rule.
    fn l4proto(&mut self, proto: u8) -> &mut Self {
        self.push(meta_load(META_L4PROTO)).push(cmp(OP_EQ, vec![proto]));
        self.l4proto = Some(proto);
        self
    }

    fn nfproto(&mut self, proto: u8) -> &mut Self {
        self.push(meta_load(META_NFPROTO)).push(cmp(OP_EQ, vec![proto]));
        self.nfproto = Some(proto);
        self
    }

    fn need_l4(&mut self, proto: u8) {
        if self.l4proto != Some(proto) {
            self.l4proto(proto);
        }
    }

    fn need_nfproto(&mut self, proto: u8) {
        if self.nfproto != Some(proto) {
            self.nfproto(proto);
        }
    }

    /// `iifname X` / `oifname X`: the whole padded name, or the stem of `X+` as a prefix.
    fn iface(&mut self, key: u32, name: &str) -> &mut Self {
        let value = match name.strip_suffix('+') {
            Some(stem) => stem.as_bytes().to_vec(),
            None => {
                let mut bytes = name.as_bytes().to_vec();
                bytes.resize(IFNAMSIZ, 0);
                bytes
            }
        };
        self.push(meta_load(key)).push(cmp(OP_EQ, value))
    }

    /// `ip[6] saddr|daddr [!=] NET`. nft loads only the whole bytes a byte-aligned prefix
    /// covers; other prefixes (and `/0`) load the full address and mask it.
    fn address(&mut self, field: Field, net: &IpNet, negate: bool) -> &mut Self {
        let (proto, offset, bytes) = match (net, field) {
            (IpNet::V4(n), Field::Source) => (NFPROTO_IPV4, 12, n.network().octets().to_vec()),
            (IpNet::V4(n), Field::Destination) => (NFPROTO_IPV4, 16, n.network().octets().to_vec()),
            (IpNet::V6(n), Field::Source) => (NFPROTO_IPV6, 8, n.network().octets().to_vec()),
            (IpNet::V6(n), Field::Destination) => (NFPROTO_IPV6, 24, n.network().octets().to_vec()),
        };
        self.need_nfproto(proto);
        let op = if negate { OP_NEQ } else { OP_EQ };
        let prefix = usize::from(net.prefix_len());
        if prefix % 8 == 0 && prefix > 0 {
            let len = prefix / 8;
            self.push(payload(BASE_NETWORK, offset, len as u32)).push(cmp(op, bytes[..len].to_vec()))
        } else {
            let mask = match net {
                IpNet::V4(n) => n.netmask().octets().to_vec(),
                IpNet::V6(n) => n.netmask().octets().to_vec(),
            };
            self.push(payload(BASE_NETWORK, offset, bytes.len() as u32)).push(bitwise(mask)).push(cmp(op, bytes))
        }
    }

    fn host(&mut self, field: Field, addr: &IpAddr) -> &mut Self {
        self.address(field, &IpNet::from(*addr), false)
    }

    /// `tcp|udp dport|sport [!=] SPEC`: ranges compare as `>= low, <= high`, and `!=` ranges
    /// with the range expression, as nft emits them.
    fn port(&mut self, proto: u8, source: bool, spec: PortSpec, negate: bool) -> &mut Self {
        self.need_l4(proto);
        self.push(payload(BASE_TRANSPORT, if source { 0 } else { 2 }, 2));
        match (spec, negate) {
            (PortSpec::Single(port), false) => self.push(cmp(OP_EQ, port.to_be_bytes().to_vec())),
            (PortSpec::Single(port), true) => self.push(cmp(OP_NEQ, port.to_be_bytes().to_vec())),
            (PortSpec::Range(low, high), false) => {
                self.push(cmp(OP_GTE, low.to_be_bytes().to_vec())).push(cmp(OP_LTE, high.to_be_bytes().to_vec()))
            }
            (PortSpec::Range(low, high), true) => {
                self.push(range(OP_NEQ, low.to_be_bytes().to_vec(), high.to_be_bytes().to_vec()))
            }
        }
    }

    /// `tcp dport != { a, b }`: a lookup in an anonymous set, inverted.
    fn port_not_in(&mut self, ports: &[u16]) -> &mut Self {
        self.need_l4(IPPROTO_TCP);
        self.push(payload(BASE_TRANSPORT, 2, 2));
        self.set = Some(AnonymousSet { elements: ports.iter().map(|p| p.to_be_bytes().to_vec()).collect() });
        // NFTA_LOOKUP_SREG, _SET, _SET_ID (filled in per batch), _FLAGS (NFT_LOOKUP_F_INV).
        self.push(Expr {
            name: "lookup",
            attrs: vec![Attr::be32(2, REG_1), Attr::string(1, ANONYMOUS_SET_NAME), Attr::be32(4, 0), Attr::be32(5, 1)],
        })
    }

    fn owner(&mut self, owner: u32, key: u32, negate: bool) -> &mut Self {
        self.push(meta_load(key)).push(cmp(if negate { OP_NEQ } else { OP_EQ }, owner.to_ne_bytes().to_vec()))
    }

    fn mark(&mut self, mark: u32, negate: bool) -> &mut Self {
        self.push(meta_load(META_MARK)).push(cmp(if negate { OP_NEQ } else { OP_EQ }, mark.to_ne_bytes().to_vec()))
    }

    fn ct_state(&mut self, bits: u32) -> &mut Self {
        self.push(ct_load(CT_STATE))
            .push(bitwise(bits.to_ne_bytes().to_vec()))
            .push(cmp(OP_NEQ, 0u32.to_ne_bytes().to_vec()))
    }

    fn redirect(&mut self, port: u16) -> &mut Self {
        self.push(immediate(port.to_be_bytes().to_vec()))
            .push(Expr { name: "redir", attrs: vec![Attr::be32(1, REG_1), Attr::be32(3, NAT_RANGE_PROTO_SPECIFIED)] })
    }

    fn set_mark(&mut self, mark: u32) -> &mut Self {
        self.push(immediate(mark.to_ne_bytes().to_vec())).push(meta_set(META_MARK))
    }

    fn zone(&mut self, zone: u16) -> &mut Self {
        self.push(immediate(zone.to_ne_bytes().to_vec())).push(ct_set(CT_ZONE))
    }

    fn counter_verdict(&mut self, v: Verdict) -> &mut Self {
        self.push(counter()).push(verdict(v))
    }
}

fn l3_proto(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => NFPROTO_IPV4,
        IpNet::V6(_) => NFPROTO_IPV6,
    }
}

fn owner_key(owner: &Owner) -> u32 {
    match owner {
        Owner::Uid(_) => META_SKUID,
        Owner::Gid(_) => META_SKGID,
    }
}

fn udp_port(b: &mut Builder, port: UdpPortMatch) {
    match port {
        UdpPortMatch::Destination(p) => b.port(IPPROTO_UDP, false, PortSpec::Single(p), false),
        UdpPortMatch::Source(p) => b.port(IPPROTO_UDP, true, PortSpec::Single(p), false),
    };
}

/// `meta nfproto ipv6 counter return`: the guard put first in each base chain with IPv6 off.
pub(crate) fn ipv6_guard() -> RuleExprs {
    let mut b = Builder::default();
    b.nfproto(NFPROTO_IPV6).counter_verdict(Verdict::Return);
    RuleExprs { exprs: b.exprs, set: None }
}

/// The expressions for one rule shape (the text each produces is in `src/render/nft.rs`).
pub(crate) fn rule_exprs(kind: &RuleKind, ids: &mut IdResolver) -> Result<RuleExprs, UnknownName> {
    let mut b = Builder::default();
    match kind {
        RuleKind::Always(v) => {
            b.counter_verdict(*v);
        }
        RuleKind::InInterface { iface, verdict: v } => {
            b.iface(META_IIFNAME, iface.as_str()).counter_verdict(*v);
        }
        RuleKind::OutInterface { iface, verdict: v } => {
            b.iface(META_OIFNAME, iface.as_str()).counter_verdict(*v);
        }
        RuleKind::InInterfaceToDestination { iface, destination, verdict: v } => {
            b.iface(META_IIFNAME, iface.as_str()).address(Field::Destination, destination, false).counter_verdict(*v);
        }
        RuleKind::InvalidState(v) => {
            b.l4proto(IPPROTO_TCP).ct_state(CT_STATE_INVALID).counter_verdict(*v);
        }
        RuleKind::Tcp(v) => {
            b.l4proto(IPPROTO_TCP).counter_verdict(*v);
        }
        RuleKind::TcpPort { port, verdict: v } => {
            b.l4proto(IPPROTO_TCP).port(IPPROTO_TCP, false, *port, false).counter_verdict(*v);
        }
        RuleKind::OutboundPort { proto, port, verdict: v } => {
            b.port(ip_proto(*proto), false, *port, false).counter_verdict(*v);
        }
        RuleKind::RedirectTcp(port) => {
            b.l4proto(IPPROTO_TCP).push(counter()).redirect(port.0);
        }
        RuleKind::SetMark(mark) => {
            b.push(counter()).set_mark(*mark);
        }
        RuleKind::Tproxy { not_destination, port, mark } => {
            b.l4proto(IPPROTO_TCP).address(Field::Destination, not_destination, true);
            b.push(immediate(port.0.to_be_bytes().to_vec())).push(Expr {
                name: "tproxy",
                attrs: vec![Attr::be32(1, u32::from(l3_proto(not_destination))), Attr::be32(3, REG_1)],
            });
            b.set_mark(*mark).counter_verdict(Verdict::Accept);
        }
        RuleKind::TcpEstablished { port, verdict: v } => {
            b.l4proto(IPPROTO_TCP).ct_state(CT_STATE_ESTABLISHED_RELATED);
            if let Some(port) = port {
                b.port(IPPROTO_TCP, false, *port, false);
            }
            b.counter_verdict(*v);
        }
        RuleKind::LoopbackOutFrom { source, verdict: v } => {
            b.iface(META_OIFNAME, "lo").address(Field::Source, source, false).counter_verdict(*v);
        }
        RuleKind::ProxyLoopbackToInbound { owner, not_destination, tunnel_port, exclude_dns, verdict: v } => {
            b.iface(META_OIFNAME, "lo").l4proto(IPPROTO_TCP).address(Field::Destination, not_destination, true);
            if *exclude_dns {
                b.port_not_in(&[DNS_PORT, tunnel_port.0]);
            } else {
                b.port(IPPROTO_TCP, false, PortSpec::Single(tunnel_port.0), true);
            }
            b.owner(ids.owner(owner)?, owner_key(owner), false).counter_verdict(*v);
        }
        RuleKind::LoopbackNotOwner { owner, exclude_dns, verdict: v } => {
            b.iface(META_OIFNAME, "lo");
            if *exclude_dns {
                b.l4proto(IPPROTO_TCP).port(IPPROTO_TCP, false, PortSpec::Single(DNS_PORT), true);
            }
            b.owner(ids.owner(owner)?, owner_key(owner), true).counter_verdict(*v);
        }
        RuleKind::OwnerIs { owner, verdict: v } => {
            b.owner(ids.owner(owner)?, owner_key(owner), false).counter_verdict(*v);
        }
        RuleKind::NotInGroups { groups, verdict: v } => {
            for group in groups {
                let gid = ids.owner(&Owner::Gid(group.clone()))?;
                b.owner(gid, META_SKGID, true);
            }
            b.counter_verdict(*v);
        }
        RuleKind::DnsRedirect { proto, server } => {
            match (server, proto) {
                (Some(addr), _) => {
                    b.host(Field::Destination, addr).port(ip_proto(*proto), false, PortSpec::Single(DNS_PORT), false);
                }
                (None, Proto::Tcp) => {
                    b.l4proto(IPPROTO_TCP).port(IPPROTO_TCP, false, PortSpec::Single(DNS_PORT), false);
                }
                (None, Proto::Udp) => {
                    b.port(IPPROTO_UDP, false, PortSpec::Single(DNS_PORT), false);
                }
            }
            b.push(counter()).redirect(AGENT_DNS_PORT);
        }
        RuleKind::UdpOwnerZone { port, owner, zone } => {
            udp_port(&mut b, *port);
            b.owner(ids.owner(owner)?, owner_key(owner), false).push(counter()).zone(*zone);
        }
        RuleKind::UdpServerZone { port, server, zone } => {
            udp_port(&mut b, *port);
            match server {
                ServerMatch::Any => {}
                ServerMatch::Destination(addr) => {
                    b.host(Field::Destination, addr);
                }
                ServerMatch::Source(addr) => {
                    b.host(Field::Source, addr);
                }
            }
            b.push(counter()).zone(*zone);
        }
        RuleKind::Destination { destination, verdict: v } => {
            b.address(Field::Destination, destination, false).counter_verdict(*v);
        }
        RuleKind::SaveMark(mark) => {
            b.l4proto(IPPROTO_TCP).mark(*mark, false).push(counter()).push(meta_load(META_MARK)).push(ct_set(CT_MARK));
        }
        RuleKind::LoopbackOutMarked { mark, verdict: v } => {
            b.iface(META_OIFNAME, "lo").l4proto(IPPROTO_TCP).mark(*mark, false).counter_verdict(*v);
        }
        RuleKind::MarkProxyLoopback { owner, not_destination, mark } => {
            b.iface(META_OIFNAME, "lo").l4proto(IPPROTO_TCP).address(Field::Destination, not_destination, true);
            b.owner(ids.owner(owner)?, owner_key(owner), false).push(counter()).set_mark(*mark);
        }
        RuleKind::RestoreMark(mark) => {
            b.l4proto(IPPROTO_TCP)
                .push(ct_load(CT_MARK))
                .push(cmp(OP_EQ, mark.to_ne_bytes().to_vec()))
                .push(counter())
                .push(ct_load(CT_MARK))
                .push(meta_set(META_MARK));
        }
        RuleKind::TcpMarked { mark, verdict: v } => {
            b.l4proto(IPPROTO_TCP).mark(*mark, false).counter_verdict(*v);
        }
        RuleKind::LoopbackInFrom { source, verdict: v } => {
            b.iface(META_IIFNAME, "lo").l4proto(IPPROTO_TCP).address(Field::Source, source, false).counter_verdict(*v);
        }
        RuleKind::LoopbackInNotMarked { mark, verdict: v } => {
            b.iface(META_IIFNAME, "lo").l4proto(IPPROTO_TCP).mark(*mark, true).counter_verdict(*v);
        }
    }
    Ok(RuleExprs { exprs: b.exprs, set: b.set })
}

fn ip_proto(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(rule: &RuleExprs) -> Vec<&'static str> {
        rule.exprs.iter().map(|e| e.name).collect()
    }

    fn destination(net: &str) -> RuleExprs {
        let kind = RuleKind::Destination { destination: net.parse().unwrap(), verdict: Verdict::Return };
        rule_exprs(&kind, &mut IdResolver::new(std::path::Path::new("/nonexistent"))).unwrap()
    }

    #[test]
    fn byte_aligned_prefixes_load_only_their_bytes_and_others_are_masked() {
        let aligned = destination("10.0.0.0/8");
        assert_eq!(names(&aligned), ["meta", "cmp", "payload", "cmp", "counter", "immediate"]);
        assert_eq!(aligned.exprs[2], payload(BASE_NETWORK, 16, 1));
        assert_eq!(aligned.exprs[3], cmp(OP_EQ, vec![10]));

        let masked = destination("10.16.0.0/12");
        assert_eq!(names(&masked), ["meta", "cmp", "payload", "bitwise", "cmp", "counter", "immediate"]);
        assert_eq!(masked.exprs[3], bitwise(vec![255, 240, 0, 0]));

        let everything = destination("::/0");
        assert_eq!(everything.exprs[1], cmp(OP_EQ, vec![NFPROTO_IPV6]));
        assert_eq!(everything.exprs[2], payload(BASE_NETWORK, 24, 16));
        assert_eq!(everything.exprs[3], bitwise(vec![0; 16]));
    }

    #[test]
    fn an_explicit_l4proto_is_not_repeated_but_an_implicit_one_is_added() {
        let mut ids = IdResolver::new(std::path::Path::new("/nonexistent"));
        let port = PortSpec::Single(80);
        let explicit = rule_exprs(&RuleKind::TcpPort { port, verdict: Verdict::Return }, &mut ids).unwrap();
        let implicit =
            rule_exprs(&RuleKind::OutboundPort { proto: Proto::Udp, port, verdict: Verdict::Return }, &mut ids)
                .unwrap();
        assert_eq!(names(&explicit), names(&implicit));
        assert_eq!(implicit.exprs[1], cmp(OP_EQ, vec![IPPROTO_UDP]));
    }

    #[test]
    fn an_iptables_wildcard_interface_matches_its_stem_as_a_prefix() {
        let mut ids = IdResolver::new(std::path::Path::new("/nonexistent"));
        let iface = crate::config::IfaceName::parse("-c", "eth+").unwrap();
        let rule = rule_exprs(&RuleKind::InInterface { iface, verdict: Verdict::Return }, &mut ids).unwrap();
        // What nft writes for `iifname "eth*"`: no NUL, no padding.
        assert_eq!(rule.exprs[1], cmp(OP_EQ, b"eth".to_vec()));
        let exact = crate::config::IfaceName::parse("-c", "eth0").unwrap();
        let rule = rule_exprs(&RuleKind::InInterface { iface: exact, verdict: Verdict::Return }, &mut ids).unwrap();
        assert_eq!(rule.exprs[1], cmp(OP_EQ, b"eth0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()));
    }
}
