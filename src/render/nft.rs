//! The nft transaction for `--native-nftables`: three `inet` tables, flushed and refilled in
//! one atomic `nft -f -` run. [`transaction`] is byte for byte upstream's text (dry-run, goldens);
//! [`apply_transaction`] is what a real run applies: the same, made exact and IPv6-safe.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::plan::{
    Chain, Family, Owner, Plan, Position, Proto, Rule, RuleKind, ServerMatch, Table, UdpPortMatch, Verdict,
    AGENT_DNS_PORT, DNS_PORT,
};

/// The tables in the order they are emitted and applied.
pub const TABLES: [Table; 3] = [Table::Nat, Table::Mangle, Table::Raw];

pub fn table_name(table: Table) -> &'static str {
    match table {
        Table::Nat => "istio-proxy-nat",
        Table::Mangle => "istio-proxy-mangle",
        Table::Raw => "istio-proxy-raw",
        Table::Filter => "istio-proxy-filter",
    }
}

/// Chains in their fixed declaration order, with the base-chain spec where there is one.
pub(crate) fn declared_chains(table: Table) -> &'static [(Chain, Option<&'static str>)] {
    match table {
        Table::Nat => &[
            (Chain::Prerouting, Some("{ type nat hook prerouting priority -100 ; }")),
            (Chain::Output, Some("{ type nat hook output priority -100 ; }")),
            (Chain::IstioInbound, None),
            (Chain::IstioRedirect, None),
            (Chain::IstioInRedirect, None),
            (Chain::IstioOutput, None),
            (Chain::IstioOutputDns, None),
        ],
        Table::Mangle => &[
            (Chain::Prerouting, Some("{ type filter hook prerouting priority -150 ; }")),
            (Chain::Output, Some("{ type route hook output priority -150 ; }")),
            (Chain::IstioDivert, None),
            (Chain::IstioTproxy, None),
            (Chain::IstioInbound, None),
            (Chain::IstioDrop, None),
        ],
        Table::Raw => &[
            (Chain::Prerouting, Some("{ type filter hook prerouting priority -300 ; }")),
            (Chain::Output, Some("{ type filter hook output priority -300 ; }")),
            (Chain::IstioInbound, None),
            (Chain::IstioOutputDns, None),
        ],
        Table::Filter => &[],
    }
}

/// Whether nft gets this rule. A rule with an address of its own is emitted for its family
/// (IPv6 only when enabled). A rule without one matches both families at once, so it is
/// emitted once when any family it is planned for is active. Upstream emits such a rule even
/// when it was planned for IPv6 alone with IPv6 disabled, jumping to a chain never declared
/// (an nft error); that case is left out here.
pub fn emitted(rule: &Rule, enable_ipv6: bool) -> bool {
    match rule.kind.address_family() {
        Some(Family::V4) => true,
        Some(Family::V6) => enable_ipv6,
        None => rule.families.v4 || (rule.families.v6 && enable_ipv6),
    }
}

/// The rules nft gets for one table, in plan order.
pub(crate) fn table_rules(plan: &Plan, table: Table) -> Vec<&Rule> {
    plan.rules.iter().filter(|r| r.table == table && emitted(r, plan.enable_ipv6)).collect()
}

/// The chains a table declares: those of the fixed list that hold at least one rule.
fn used_chains<'a>(
    table: Table,
    rules: &'a [&Rule],
) -> impl Iterator<Item = &'static (Chain, Option<&'static str>)> + 'a {
    declared_chains(table).iter().filter(move |(chain, _)| rules.iter().any(|r| r.chain == *chain))
}

/// The whole transaction; tables with no rules are left out entirely. This is upstream's text
/// (the dry-run output and the goldens).
pub fn transaction(plan: &Plan) -> String {
    let mut out = String::new();
    for table in TABLES {
        let rules = table_rules(plan, table);
        if rules.is_empty() {
            continue;
        }
        let name = table_name(table);
        let _ = writeln!(out, "add table inet {name}");
        let _ = writeln!(out, "flush table inet {name}");
        for (chain, base) in used_chains(table, &rules) {
            match base {
                Some(spec) => {
                    let _ = writeln!(out, "add chain inet {name} {} {spec}", chain.nft_name());
                }
                None => {
                    let _ = writeln!(out, "add chain inet {name} {}", chain.nft_name());
                }
            }
        }
        let mut counts: HashMap<Chain, u32> = HashMap::new();
        for rule in rules {
            let count = counts.entry(rule.chain).or_insert(0);
            let body = body(&rule.kind);
            let chain = rule.chain.nft_name();
            match rule.position {
                // nft indexes from 0; an index past the rules this batch has added would be an
                // error, and the table was just flushed, so such inserts become appends.
                Position::Insert(pos) if *count > 0 && pos - 1 < *count => {
                    let _ = writeln!(out, "insert rule inet {name} {chain} index {} {body}", pos - 1);
                }
                _ => {
                    let _ = writeln!(out, "add rule inet {name} {chain} {body}");
                }
            }
            *count += 1;
        }
    }
    out
}

/// What a real run applies: upstream's [`transaction`], made exact and IPv6-safe while staying
/// one atomic batch.
///
/// * It starts with the [`cleanup_transaction`], so every istio table is rebuilt from nothing.
///   Upstream only flushes the tables it writes, which leaves a table the new configuration no
///   longer uses (with all its rules) and emptied chains behind.
/// * With IPv6 disabled, each base chain starts with `meta nfproto ipv6 counter return`.
///   Rules without an address match both families in an `inet` table, so upstream captures
///   IPv6 traffic it has no IPv6 protections for; the guard gives IPv6 what the iptables
///   backend gives it when ip6tables is left alone: nothing. It is inserted last, without an
///   index, so it lands before the rules (including `insert … index 0` ones) of its chain.
pub fn apply_transaction(plan: &Plan) -> String {
    let mut out = cleanup_transaction();
    out.push_str(&transaction(plan));
    if !plan.enable_ipv6 {
        for table in TABLES {
            let rules = table_rules(plan, table);
            for (chain, base) in used_chains(table, &rules) {
                if base.is_some() {
                    let _ = writeln!(
                        out,
                        "insert rule inet {} {} meta nfproto ipv6 counter return",
                        table_name(table),
                        chain.nft_name()
                    );
                }
            }
        }
    }
    out
}

/// The transaction `--cleanup-only` runs: each table added (so that deleting it cannot fail)
/// and deleted.
pub fn cleanup_transaction() -> String {
    let mut out = String::new();
    for table in TABLES {
        let name = table_name(table);
        let _ = writeln!(out, "add table inet {name}");
        let _ = writeln!(out, "delete table inet {name}");
    }
    out
}

/// One rule's nft text (what follows `add rule inet TABLE CHAIN`); for `explain`, which shows
/// the rules a packet meets in the backend's own syntax.
pub fn rule_text(rule: &Rule) -> String {
    body(&rule.kind)
}

fn verdict(v: Verdict) -> String {
    match v {
        Verdict::Return => "return".to_string(),
        Verdict::Accept => "accept".to_string(),
        Verdict::Drop => "drop".to_string(),
        Verdict::Jump(chain) => format!("jump {}", chain.nft_name()),
    }
}

fn l3(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    }
}

fn host(addr: &IpAddr) -> (&'static str, String) {
    match addr {
        IpAddr::V4(a) => ("ip", format!("{a}/32")),
        IpAddr::V6(a) => ("ip6", format!("{a}/128")),
    }
}

/// `skuid U` / `skgid G`, optionally negated; the raw table spells it with `meta`.
fn owner(owner: &Owner, negated: bool) -> String {
    let (key, id) = match owner {
        Owner::Uid(id) => ("skuid", id),
        Owner::Gid(id) => ("skgid", id),
    };
    if negated {
        format!("{key} != {id}")
    } else {
        format!("{key} {id}")
    }
}

/// Words nft's parser may take as a keyword rather than a name, wherever an interface name can
/// stand: one a line, `#` lines are comments. Generous on purpose: quoting a name that did not
/// need it is harmless, leaving a keyword bare makes nft reject the batch (or read something
/// else). The kernel tests read the same file and apply every word.
const NFT_KEYWORDS: &str = include_str!("nft_keywords.txt");

fn is_nft_keyword(name: &str) -> bool {
    NFT_KEYWORDS.lines().filter(|line| !line.starts_with('#')).any(|word| word.eq_ignore_ascii_case(name))
}

/// An interface name as nft reads it literally. Names nft would take for something else are
/// quoted: those starting with a digit or another non-letter (`010` is octal 8, `0x10` is 16) and
/// keywords (`accept`, `meta`, ...). The iptables wildcard `eth+` becomes nft's `"eth*"`.
/// Ordinary names (`eth0`, `not-istio-nic`) stay bare, as upstream prints them.
fn iface_name(iface: &crate::config::IfaceName) -> std::borrow::Cow<'_, str> {
    let name = iface.as_str();
    if let Some(stem) = name.strip_suffix('+') {
        return format!("\"{stem}*\"").into();
    }
    let starts_like_a_word = name.starts_with(|c: char| c.is_ascii_alphabetic());
    let is_keyword = is_nft_keyword(name);
    if starts_like_a_word && !is_keyword {
        name.into()
    } else {
        format!("\"{name}\"").into()
    }
}

fn udp_port(port: UdpPortMatch) -> String {
    match port {
        UdpPortMatch::Destination(p) => format!("udp dport {p}"),
        UdpPortMatch::Source(p) => format!("udp sport {p}"),
    }
}

pub(crate) fn body(kind: &RuleKind) -> String {
    match kind {
        RuleKind::Always(v) => format!("counter {}", verdict(*v)),
        RuleKind::InInterface { iface, verdict: v } => format!("iifname {} counter {}", iface_name(iface), verdict(*v)),
        RuleKind::OutInterface { iface, verdict: v } => {
            format!("oifname {} counter {}", iface_name(iface), verdict(*v))
        }
        RuleKind::InInterfaceToDestination { iface, destination, verdict: v } => {
            format!("iifname {} {} daddr {destination} counter {}", iface_name(iface), l3(destination), verdict(*v))
        }
        RuleKind::InvalidState(v) => format!("meta l4proto tcp ct state invalid counter {}", verdict(*v)),
        RuleKind::Tcp(v) => format!("meta l4proto tcp counter {}", verdict(*v)),
        RuleKind::TcpPort { port, verdict: v } => {
            format!("meta l4proto tcp tcp dport {} counter {}", port.nft(), verdict(*v))
        }
        RuleKind::OutboundPort { proto, port, verdict: v } => {
            format!("{} dport {} counter {}", proto.name(), port.nft(), verdict(*v))
        }
        RuleKind::RedirectTcp(port) => format!("meta l4proto tcp counter redirect to :{port}"),
        RuleKind::SetMark(mark) => format!("counter meta mark set {mark}"),
        RuleKind::Tproxy { not_destination, port, mark } => {
            let family = l3(not_destination);
            format!(
                "meta l4proto tcp {family} daddr != {not_destination} tproxy {family} to :{port} meta mark set {mark} counter accept"
            )
        }
        RuleKind::TcpEstablished { port, verdict: v } => {
            let port = port.map(|p| format!("tcp dport {} ", p.nft())).unwrap_or_default();
            format!("meta l4proto tcp ct state related,established {port}counter {}", verdict(*v))
        }
        RuleKind::LoopbackOutFrom { source, verdict: v } => {
            format!("oifname lo {} saddr {source} counter {}", l3(source), verdict(*v))
        }
        RuleKind::ProxyLoopbackToInbound { owner: o, not_destination, tunnel_port, exclude_dns, verdict: v } => {
            let ports = if *exclude_dns { format!("{{ {DNS_PORT}, {tunnel_port} }}") } else { tunnel_port.to_string() };
            format!(
                "oifname lo meta l4proto tcp {} daddr != {not_destination} tcp dport != {ports} {} counter {}",
                l3(not_destination),
                owner(o, false),
                verdict(*v)
            )
        }
        RuleKind::LoopbackNotOwner { owner: o, exclude_dns, verdict: v } => {
            let dns = if *exclude_dns { format!("meta l4proto tcp tcp dport != {DNS_PORT} ") } else { String::new() };
            format!("oifname lo {dns}{} counter {}", owner(o, true), verdict(*v))
        }
        RuleKind::OwnerIs { owner: o, verdict: v } => format!("{} counter {}", owner(o, false), verdict(*v)),
        RuleKind::NotInGroups { groups, verdict: v } => {
            let mut text = String::new();
            for group in groups {
                let _ = write!(text, "{} ", owner(&Owner::Gid(group.clone()), true));
            }
            format!("{text}counter {}", verdict(*v))
        }
        RuleKind::DnsRedirect { proto, server } => {
            let redirect = format!("counter redirect to :{AGENT_DNS_PORT}");
            match (server, proto) {
                (Some(addr), _) => {
                    let (family, host) = host(addr);
                    format!("{family} daddr {host} {} dport {DNS_PORT} {redirect}", proto.name())
                }
                (None, Proto::Tcp) => format!("meta l4proto tcp tcp dport {DNS_PORT} {redirect}"),
                (None, Proto::Udp) => format!("udp dport {DNS_PORT} {redirect}"),
            }
        }
        RuleKind::UdpOwnerZone { port, owner: o, zone } => {
            format!("{} meta {} counter ct zone set {zone}", udp_port(*port), owner(o, false))
        }
        RuleKind::UdpServerZone { port, server, zone } => {
            let server = match server {
                ServerMatch::Any => String::new(),
                ServerMatch::Destination(addr) => {
                    let (family, host) = host(addr);
                    format!("{family} daddr {host} ")
                }
                ServerMatch::Source(addr) => {
                    let (family, host) = host(addr);
                    format!("{family} saddr {host} ")
                }
            };
            format!("{} {server}counter ct zone set {zone}", udp_port(*port))
        }
        RuleKind::Destination { destination, verdict: v } => {
            format!("{} daddr {destination} counter {}", l3(destination), verdict(*v))
        }
        RuleKind::SaveMark(mark) => format!("meta l4proto tcp mark {mark} counter ct mark set mark"),
        RuleKind::LoopbackOutMarked { mark, verdict: v } => {
            format!("oifname lo meta l4proto tcp mark {mark} counter {}", verdict(*v))
        }
        RuleKind::MarkProxyLoopback { owner: o, not_destination, mark } => format!(
            "oifname lo meta l4proto tcp {} daddr != {not_destination} {} counter meta mark set {mark}",
            l3(not_destination),
            owner(o, false)
        ),
        RuleKind::RestoreMark(mark) => format!("meta l4proto tcp ct mark {mark} counter meta mark set ct mark"),
        RuleKind::TcpMarked { mark, verdict: v } => format!("meta l4proto tcp mark {mark} counter {}", verdict(*v)),
        RuleKind::LoopbackInFrom { source, verdict: v } => {
            format!("iifname lo meta l4proto tcp {} saddr {source} counter {}", l3(source), verdict(*v))
        }
        RuleKind::LoopbackInNotMarked { mark, verdict: v } => {
            format!("iifname lo meta l4proto tcp mark != {mark} counter {}", verdict(*v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Families;

    fn rule(table: Table, chain: Chain, position: Position, kind: RuleKind) -> Rule {
        Rule { families: Families::BOTH, table, chain, position, kind }
    }

    fn plan(enable_ipv6: bool) -> Plan {
        let iface = crate::config::IfaceName::parse_list("-k", "eth1").unwrap().remove(0);
        Plan {
            rules: vec![
                rule(
                    Table::Nat,
                    Chain::Prerouting,
                    Position::Append,
                    RuleKind::InInterface { iface: iface.clone(), verdict: Verdict::Return },
                ),
                rule(
                    Table::Nat,
                    Chain::Prerouting,
                    Position::Insert(1),
                    RuleKind::InInterface { iface, verdict: Verdict::Jump(Chain::IstioRedirect) },
                ),
                rule(Table::Nat, Chain::IstioRedirect, Position::Append, RuleKind::RedirectTcp(port())),
            ],
            enable_ipv6,
        }
    }

    fn port() -> crate::config::Port {
        crate::config::Port::parse("-p", "15001").unwrap()
    }

    fn iface(raw: &str) -> String {
        let name = crate::config::IfaceName::parse("-c", raw).unwrap();
        iface_name(&name).into_owned()
    }

    #[test]
    fn ordinary_interface_names_stay_bare_as_upstream_prints_them() {
        for name in ["eth0", "eth1", "not-istio-nic", "lo", "veth_a.10", "ens3f0"] {
            assert_eq!(iface(name), name);
        }
    }

    #[test]
    fn interface_names_nft_would_read_as_numbers_are_quoted() {
        assert_eq!(iface("010"), "\"010\"");
        assert_eq!(iface("0x10"), "\"0x10\"");
        assert_eq!(iface("1"), "\"1\"");
        assert_eq!(iface("_x"), "\"_x\"");
        assert_eq!(iface(".x"), "\".x\"");
        assert_eq!(iface("-x"), "\"-x\"");
    }

    #[test]
    fn interface_names_that_are_nft_keywords_are_quoted() {
        for name in ["accept", "meta", "tcp", "ip6", "Drop", "counter"] {
            assert_eq!(iface(name), format!("\"{name}\""));
        }
        // Missed by the first hand-written list; `nft -f` rejected `iifname eq counter return`.
        for name in ["eq", "ne", "lt", "gt", "le", "ge", "lshift", "rshift", "exists", "missing", "expires", "ruleset"]
            .into_iter()
            .chain(["symhash", "xt", "vxlan", "tunnel", "last"])
        {
            assert_eq!(iface(name), format!("\"{name}\""));
        }
    }

    #[test]
    fn the_keyword_file_holds_only_words_nft_could_scan_as_one_token() {
        let words: Vec<&str> = NFT_KEYWORDS.lines().filter(|line| !line.starts_with('#')).collect();
        assert!(words.len() > 380, "{}", words.len());
        for word in words {
            let scannable = word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            assert!(scannable, "{word:?}");
            assert!(is_nft_keyword(word) && is_nft_keyword(&word.to_ascii_uppercase()), "{word:?}");
        }
        assert!(!is_nft_keyword("eth0") && !is_nft_keyword(""), "ordinary names stay bare");
    }

    #[test]
    fn the_iptables_wildcard_becomes_nfts() {
        assert_eq!(iface("eth+"), "\"eth*\"");
        assert_eq!(iface("0+"), "\"0*\"");
    }

    #[test]
    fn rules_on_interfaces_use_the_literal_form() {
        let iface = crate::config::IfaceName::parse("-c", "010").unwrap();
        let kind = RuleKind::InInterface { iface: iface.clone(), verdict: Verdict::Return };
        assert_eq!(body(&kind), "iifname \"010\" counter return");
        let kind = RuleKind::OutInterface { iface, verdict: Verdict::Accept };
        assert_eq!(body(&kind), "oifname \"010\" counter accept");
    }

    #[test]
    fn apply_transaction_rebuilds_every_istio_table_before_upstreams_text() {
        let plan = plan(true);
        let text = apply_transaction(&plan);
        assert_eq!(text, format!("{}{}", cleanup_transaction(), transaction(&plan)));
        assert!(text.starts_with("add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n"));
    }

    #[test]
    fn apply_transaction_guards_base_chains_against_ipv6_when_it_is_off() {
        let plan = plan(false);
        let text = apply_transaction(&plan);
        let upstream = format!("{}{}", cleanup_transaction(), transaction(&plan));
        let guards = text.strip_prefix(&upstream).unwrap();
        // Only the declared base chain: nat output has no rules here, istio-redirect is regular.
        assert_eq!(guards, "insert rule inet istio-proxy-nat prerouting meta nfproto ipv6 counter return\n");
    }
}
