//! The plan's rules exactly as `iptables-save` (and `ip6tables-save`) print them once applied,
//! rendered from the typed rule, so that a rerun can tell "already applied" from one `-save`
//! compared in memory instead of one `-C` per rule.
//!
//! `-save` does not echo the restore input: it prints the addresses first (`-s`, `-d`, then
//! `-i`, `-o`, `-p`), names the implicit protocol match (`-m tcp --dport`), prints marks in hex
//! with their mask (`MARK --set-xmark 0x539/0xffffffff`), the CONNMARK masks, TPROXY's
//! `--on-ip`, REDIRECT's plural `--to-ports`, owners as numbers, and prefixes masked to their
//! network. Legacy and nft print the same text in iptables 1.8 (only the table order differs,
//! which this comparison does not look at); the kernel test `rerun::in_memory_verdict` applies
//! every golden configuration on both and checks that each planned rule is found verbatim.
//!
//! A rule whose printed form cannot be known from the plan alone (an owner given by name, which
//! iptables resolves when it loads the rule; a port range iptables prints as nothing) has no
//! form here: the caller then asks iptables (`-C`), so a wrong or missing form costs speed,
//! never correctness.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use crate::plan::{
    Family, Owner, Plan, Position, Proto, Rule, RuleKind, ServerMatch, Table, UdpPortMatch, Verdict, AGENT_DNS_PORT,
    DNS_PORT,
};

use crate::config::PortSpec;
use crate::render::iptables::TokenRule;
use crate::render::restore::{Op, RestoreInput};

/// One planned rule as `-save` prints it: its table, and its spec (the arguments after
/// `-A CHAIN`, one token each) with its `-A CHAIN …` line, or `None` for both when the printed
/// form cannot be known from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub table: Table,
    pub spec: Option<Vec<String>>,
    pub line: Option<String>,
}

/// The rules of one family in plan order, as `-save` prints them.
pub fn saved_rules(plan: &Plan, family: Family) -> Vec<SavedRule> {
    plan.rules_for(family)
        .map(|rule| {
            let spec = Spec::of(&rule.kind, family).map(|spec| spec.tokens());
            let line = spec.as_ref().map(|spec| rule_line(rule.chain.iptables_name(), spec));
            SavedRule { table: rule.table, spec, line }
        })
        .collect()
}

/// `-A CHAIN spec` as `-save` prints `rule` in `family`.
pub fn saved_line(rule: &Rule, family: Family) -> Option<String> {
    let spec = Spec::of(&rule.kind, family)?;
    Some(rule_line(rule.chain.iptables_name(), &spec.tokens()))
}

/// One family's tables as `-save` dumps them: per table, its Istio chains declared and each
/// chain's rules (spec tokens), in the order the kernel holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    tables: BTreeMap<Table, DumpTable>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DumpTable {
    /// The Istio chains, in the order they were first named.
    declared: Vec<String>,
    /// Chain → its rules' spec tokens, in the kernel's order.
    chains: BTreeMap<String, Vec<Vec<String>>>,
}

impl Dump {
    /// What the kernel holds after `rules` were restored into empty tables: every Istio chain
    /// they name declared, each rule in its chain where the kernel puts it (an insert at
    /// position N lands before the chain's Nth rule), spelled as `rules` spell it.
    pub fn after_restore(rules: &[TokenRule]) -> Dump {
        let mut dump = Dump::default();
        for rule in rules {
            let table = dump.tables.entry(rule.table).or_default();
            let target = rule.args.windows(2).find(|w| w[0] == "-j").map(|w| w[1].as_str());
            for chain in std::iter::once(rule.chain).chain(target) {
                if crate::chains::is_istio(chain) && !table.declared.iter().any(|d| d == chain) {
                    table.declared.push(chain.to_string());
                }
            }
            let held = table.chains.entry(rule.chain.to_string()).or_default();
            match rule.position {
                Position::Append => held.push(rule.args.clone()),
                Position::Insert(at) => held.insert((at as usize).saturating_sub(1).min(held.len()), rule.args.clone()),
            }
        }
        dump
    }

    /// The dump as `-save` prints it (without counters or the built-in chains' headers). This
    /// and [`saved_line`] are the only writers of `-save`-form text: the fake netfilter's
    /// scripted answers, the kernel's stand-in, are written here.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (table, held) in &self.tables {
            out.push_str(&format!("*{}\n", table.iptables_name()));
            for chain in &held.declared {
                out.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for (chain, rules) in &held.chains {
                for spec in rules {
                    out.push_str(&rule_line(chain, spec));
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The same content in the typed restore model (declarations, then each rule appended in
    /// dump order), from which the expected state is built without writing or reading text.
    pub fn restore_input(&self) -> RestoreInput {
        let mut input = RestoreInput::default();
        for (table, held) in &self.tables {
            let ops = input.table(*table);
            ops.extend(held.declared.iter().map(|chain| Op::NewChain(chain.clone())));
            for (chain, rules) in &held.chains {
                ops.extend(rules.iter().map(|spec| Op::Add {
                    chain: chain.clone(),
                    position: Position::Append,
                    spec: spec.join(" "),
                }));
            }
        }
        input
    }
}

/// A rule line of `-save`'s dump: the one place such a line is written.
fn rule_line(chain: &str, spec: &[String]) -> String {
    if spec.is_empty() {
        format!("-A {chain}")
    } else {
        format!("-A {chain} {}", spec.join(" "))
    }
}

/// Owned tokens from borrowed ones.
fn words<const N: usize>(parts: [&str; N]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

/// The parts of a rule in the order `-save` prints them, one token per argument.
#[derive(Default)]
struct Spec {
    source: Option<(bool, String)>,
    destination: Option<(bool, String)>,
    in_interface: Option<String>,
    out_interface: Option<String>,
    protocol: Option<Proto>,
    /// Match tokens in the order they are given (`-m tcp --dport 53`, `-m owner --uid-owner 0`).
    matches: Vec<String>,
    /// The target and its options.
    target: Vec<String>,
}

impl Spec {
    fn tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = Vec::with_capacity(16);
        for (flag, address) in [("-s", &self.source), ("-d", &self.destination)] {
            if let Some((negated, address)) = address {
                if *negated {
                    tokens.push("!".into());
                }
                tokens.extend(words([flag, address]));
            }
        }
        if let Some(iface) = &self.in_interface {
            tokens.extend(words(["-i", iface]));
        }
        if let Some(iface) = &self.out_interface {
            tokens.extend(words(["-o", iface]));
        }
        if let Some(proto) = self.protocol {
            tokens.extend(words(["-p", proto.name()]));
        }
        tokens.extend(self.matches.iter().cloned());
        tokens.push("-j".into());
        tokens.extend(self.target.iter().cloned());
        tokens
    }

    fn of(kind: &RuleKind, family: Family) -> Option<Spec> {
        let mut s = Spec::default();
        match kind {
            RuleKind::Always(v) => s.target = verdict(*v),
            RuleKind::InInterface { iface, verdict: v } => {
                s.in_interface = Some(iface.to_string());
                s.target = verdict(*v);
            }
            RuleKind::OutInterface { iface, verdict: v } => {
                s.out_interface = Some(iface.to_string());
                s.target = verdict(*v);
            }
            RuleKind::InInterfaceToDestination { iface, destination, verdict: v } => {
                s.in_interface = Some(iface.to_string());
                s.destination = Some((false, net(destination)));
                s.target = verdict(*v);
            }
            RuleKind::InvalidState(v) => {
                s.matches.extend(words(["-m", "conntrack", "--ctstate", "INVALID"]));
                s.target = verdict(*v);
            }
            RuleKind::Tcp(v) => {
                s.protocol = Some(Proto::Tcp);
                s.target = verdict(*v);
            }
            RuleKind::TcpPort { port, verdict: v } => {
                s.port_match(Proto::Tcp, false, "--dport", ports(port)?);
                s.target = verdict(*v);
            }
            RuleKind::OutboundPort { proto, port, verdict: v } => {
                s.port_match(*proto, false, "--dport", ports(port)?);
                s.target = verdict(*v);
            }
            RuleKind::RedirectTcp(port) => {
                s.protocol = Some(Proto::Tcp);
                s.target = words(["REDIRECT", "--to-ports", &port.to_string()]);
            }
            RuleKind::SetMark(mark) => s.target = set_mark(*mark),
            RuleKind::Tproxy { not_destination, port, mark } => {
                s.destination = Some((true, net(not_destination)));
                s.protocol = Some(Proto::Tcp);
                let any = if family == Family::V4 { "0.0.0.0" } else { "::" };
                s.target = words([
                    "TPROXY",
                    "--on-port",
                    &port.to_string(),
                    "--on-ip",
                    any,
                    "--tproxy-mark",
                    &format!("{mark:#x}/0xffffffff"),
                ]);
            }
            RuleKind::TcpEstablished { port, verdict: v } => {
                s.protocol = Some(Proto::Tcp);
                if let Some(port) = port {
                    s.port_match(Proto::Tcp, false, "--dport", ports(port)?);
                }
                s.matches.extend(words(["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]));
                s.target = verdict(*v);
            }
            RuleKind::LoopbackOutFrom { source, verdict: v } => {
                s.source = Some((false, net(source)));
                s.out_interface = Some("lo".into());
                s.target = verdict(*v);
            }
            RuleKind::ProxyLoopbackToInbound { owner: o, not_destination, tunnel_port, exclude_dns, verdict: v } => {
                s.out_interface = Some("lo".into());
                s.destination = Some((true, net(not_destination)));
                s.protocol = Some(Proto::Tcp);
                if *exclude_dns {
                    s.matches.extend(words(["-m", "multiport", "!", "--dports", &format!("{DNS_PORT},{tunnel_port}")]));
                } else {
                    s.port_match(Proto::Tcp, true, "--dport", tunnel_port.to_string());
                }
                s.matches.extend(owner(o, false)?);
                s.target = verdict(*v);
            }
            RuleKind::LoopbackNotOwner { owner: o, exclude_dns, verdict: v } => {
                s.out_interface = Some("lo".into());
                if *exclude_dns {
                    s.port_match(Proto::Tcp, true, "--dport", DNS_PORT.to_string());
                }
                s.matches.extend(owner(o, true)?);
                s.target = verdict(*v);
            }
            RuleKind::OwnerIs { owner: o, verdict: v } => {
                s.matches.extend(owner(o, false)?);
                s.target = verdict(*v);
            }
            RuleKind::NotInGroups { groups, verdict: v } => {
                for group in groups {
                    s.matches.extend(owner(&Owner::Gid(group.clone()), true)?);
                }
                s.target = verdict(*v);
            }
            RuleKind::DnsRedirect { proto, server } => {
                s.port_match(*proto, false, "--dport", DNS_PORT.to_string());
                s.destination = server.map(|server| (false, host(&server)));
                s.target = words(["REDIRECT", "--to-ports", &AGENT_DNS_PORT.to_string()]);
            }
            RuleKind::UdpOwnerZone { port, owner: o, zone } => {
                s.udp_port(*port);
                s.matches.extend(owner(o, false)?);
                s.target = words(["CT", "--zone", &zone.to_string()]);
            }
            RuleKind::UdpServerZone { port, server, zone } => {
                s.udp_port(*port);
                match server {
                    ServerMatch::Any => {}
                    ServerMatch::Destination(addr) => s.destination = Some((false, host(addr))),
                    ServerMatch::Source(addr) => s.source = Some((false, host(addr))),
                }
                s.target = words(["CT", "--zone", &zone.to_string()]);
            }
            RuleKind::Destination { destination, verdict: v } => {
                s.destination = Some((false, net(destination)));
                s.target = verdict(*v);
            }
            RuleKind::SaveMark(mark) => {
                s.protocol = Some(Proto::Tcp);
                s.matches.extend(words(["-m", "mark", "--mark", &format!("{mark:#x}")]));
                s.target = words(["CONNMARK", "--save-mark", "--nfmask", "0xffffffff", "--ctmask", "0xffffffff"]);
            }
            RuleKind::LoopbackOutMarked { mark, verdict: v } => {
                s.protocol = Some(Proto::Tcp);
                s.out_interface = Some("lo".into());
                s.matches.extend(words(["-m", "mark", "--mark", &format!("{mark:#x}")]));
                s.target = verdict(*v);
            }
            RuleKind::MarkProxyLoopback { owner: o, not_destination, mark } => {
                s.destination = Some((true, net(not_destination)));
                s.protocol = Some(Proto::Tcp);
                s.out_interface = Some("lo".into());
                s.matches.extend(owner(o, false)?);
                s.target = set_mark(*mark);
            }
            RuleKind::RestoreMark(mark) => {
                s.protocol = Some(Proto::Tcp);
                s.matches.extend(words(["-m", "connmark", "--mark", &format!("{mark:#x}")]));
                s.target = words(["CONNMARK", "--restore-mark", "--nfmask", "0xffffffff", "--ctmask", "0xffffffff"]);
            }
            RuleKind::TcpMarked { mark, verdict: v } => {
                s.protocol = Some(Proto::Tcp);
                s.matches.extend(words(["-m", "mark", "--mark", &format!("{mark:#x}")]));
                s.target = verdict(*v);
            }
            RuleKind::LoopbackInFrom { source, verdict: v } => {
                s.protocol = Some(Proto::Tcp);
                s.source = Some((false, net(source)));
                s.in_interface = Some("lo".into());
                s.target = verdict(*v);
            }
            RuleKind::LoopbackInNotMarked { mark, verdict: v } => {
                s.protocol = Some(Proto::Tcp);
                s.in_interface = Some("lo".into());
                s.matches.extend(words(["-m", "mark", "!", "--mark", &format!("{mark:#x}")]));
                s.target = verdict(*v);
            }
        }
        Some(s)
    }

    /// `-p P -m P [!] --dport|--sport X`: the protocol's own match, named.
    fn port_match(&mut self, proto: Proto, negated: bool, flag: &str, value: String) {
        self.protocol = Some(proto);
        self.matches.extend(words(["-m", proto.name()]));
        if negated {
            self.matches.push("!".into());
        }
        self.matches.extend(words([flag, &value]));
    }

    fn udp_port(&mut self, port: UdpPortMatch) {
        match port {
            UdpPortMatch::Destination(p) => self.port_match(Proto::Udp, false, "--dport", p.to_string()),
            UdpPortMatch::Source(p) => self.port_match(Proto::Udp, false, "--sport", p.to_string()),
        }
    }
}

fn verdict(verdict: Verdict) -> Vec<String> {
    let target = match verdict {
        Verdict::Return => "RETURN",
        Verdict::Accept => "ACCEPT",
        Verdict::Drop => "DROP",
        Verdict::Jump(chain) => chain.iptables_name(),
    };
    words([target])
}

fn set_mark(mark: u32) -> Vec<String> {
    words(["MARK", "--set-xmark", &format!("{mark:#x}/0xffffffff")])
}

/// A port or range as the tcp/udp match prints it; the full range is not printed at all, and
/// an inverted range means nothing the plan makes, so neither has a known form.
fn ports(port: &PortSpec) -> Option<String> {
    match *port {
        PortSpec::Single(port) => Some(port.to_string()),
        PortSpec::Range(low, high) if low == high => Some(low.to_string()),
        PortSpec::Range(0, 65535) => None,
        PortSpec::Range(low, high) if low < high => Some(format!("{low}:{high}")),
        PortSpec::Range(..) => None,
    }
}

/// `-m owner [!] --uid-owner N`: iptables stores and prints the number, so a name (resolved
/// by iptables when it loads the rule) has no known form.
fn owner(owner: &Owner, negated: bool) -> Option<Vec<String>> {
    let (flag, id) = match owner {
        Owner::Uid(id) => ("--uid-owner", id),
        Owner::Gid(id) => ("--gid-owner", id),
    };
    let number: u32 = id.to_string().parse().ok()?;
    let mut tokens = words(["-m", "owner"]);
    if negated {
        tokens.push("!".into());
    }
    tokens.extend(words([flag, &number.to_string()]));
    Some(tokens)
}

/// A prefix as iptables stores it: the network (host bits cleared) and its length.
fn net(net: &IpNet) -> String {
    let network = net.trunc();
    format!("{}/{}", address(&network.addr()), network.prefix_len())
}

fn host(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{}/128", address(addr)),
    }
}

/// An address as glibc's `inet_ntop` writes it (what iptables prints): RFC 5952 as Rust
/// writes it, except that an IPv4-compatible address (`::a.b.c.d`, first 96 bits zero) keeps
/// the dotted quad.
fn address(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => ipv6(a),
    }
}

fn ipv6(addr: &Ipv6Addr) -> String {
    let segments = addr.segments();
    if segments[..6].iter().all(|s| *s == 0) && segments[6] != 0 {
        let [.., a, b, c, d] = addr.octets();
        return format!("::{a}.{b}.{c}.{d}");
    }
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IfaceName, OwnerId, Port};
    use crate::plan::{Chain, Families, Position};

    fn line(kind: RuleKind, family: Family) -> Option<String> {
        let rule = Rule {
            families: Families::BOTH,
            table: Table::Nat,
            chain: Chain::IstioOutput,
            position: Position::Append,
            kind,
        };
        saved_line(&rule, family)
    }

    fn uid(id: &str) -> Owner {
        Owner::Uid(OwnerId::parse("-u", id).unwrap())
    }

    #[test]
    fn addresses_come_first_and_the_protocol_match_is_named() {
        let kind = RuleKind::DnsRedirect { proto: Proto::Udp, server: Some("127.0.0.53".parse().unwrap()) };
        assert_eq!(
            line(kind, Family::V4).unwrap(),
            "-A ISTIO_OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053"
        );
        let kind = RuleKind::ProxyLoopbackToInbound {
            owner: uid("1337"),
            not_destination: "127.0.0.1/32".parse().unwrap(),
            tunnel_port: Port::parse("-z", "15008").unwrap(),
            exclude_dns: false,
            verdict: Verdict::Jump(Chain::IstioInRedirect),
        };
        assert_eq!(
            line(kind, Family::V4).unwrap(),
            "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"
        );
    }

    #[test]
    fn marks_are_hex_with_their_masks() {
        let kind = RuleKind::Tproxy {
            not_destination: "::1/128".parse().unwrap(),
            port: Port::parse("-z", "15006").unwrap(),
            mark: 1337,
        };
        assert_eq!(
            line(kind, Family::V6).unwrap(),
            "-A ISTIO_OUTPUT ! -d ::1/128 -p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff"
        );
        assert_eq!(
            line(RuleKind::SetMark(1338), Family::V4).unwrap(),
            "-A ISTIO_OUTPUT -j MARK --set-xmark 0x53a/0xffffffff"
        );
        assert_eq!(
            line(RuleKind::RestoreMark(1337), Family::V4).unwrap(),
            "-A ISTIO_OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
        );
    }

    #[test]
    fn prefixes_are_networks_and_ipv4_compatible_addresses_stay_dotted() {
        let kind = RuleKind::Destination { destination: "10.1.2.3/8".parse().unwrap(), verdict: Verdict::Return };
        assert_eq!(line(kind, Family::V4).unwrap(), "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN");
        let kind = RuleKind::DnsRedirect { proto: Proto::Tcp, server: Some("::127.0.0.53".parse().unwrap()) };
        assert!(line(kind, Family::V6).unwrap().contains("-d ::127.0.0.53/128 "));
        let kind = RuleKind::LoopbackInFrom { source: "::6/128".parse().unwrap(), verdict: Verdict::Return };
        assert_eq!(line(kind, Family::V6).unwrap(), "-A ISTIO_OUTPUT -s ::6/128 -i lo -p tcp -j RETURN");
    }

    #[test]
    fn the_spec_is_one_token_per_argument_and_the_line_its_join() {
        let kind = RuleKind::LoopbackNotOwner { owner: uid("1337"), exclude_dns: true, verdict: Verdict::Return };
        let rule = Rule {
            families: Families::BOTH,
            table: Table::Nat,
            chain: Chain::IstioOutput,
            position: Position::Append,
            kind,
        };
        let plan = Plan { rules: vec![rule], enable_ipv6: false };
        let saved = &saved_rules(&plan, Family::V4)[0];
        let spec = saved.spec.clone().unwrap();
        assert_eq!(
            spec,
            [
                "-o",
                "lo",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "!",
                "--dport",
                "53",
                "-m",
                "owner",
                "!",
                "--uid-owner",
                "1337",
                "-j",
                "RETURN"
            ]
        );
        assert_eq!(saved.line.as_deref(), Some(format!("-A ISTIO_OUTPUT {}", spec.join(" ")).as_str()));
    }

    #[test]
    fn forms_iptables_decides_are_unknown() {
        assert_eq!(line(RuleKind::OwnerIs { owner: uid("istio-proxy"), verdict: Verdict::Return }, Family::V4), None);
        assert_eq!(
            line(RuleKind::OwnerIs { owner: uid("0042"), verdict: Verdict::Return }, Family::V4).unwrap(),
            "-A ISTIO_OUTPUT -m owner --uid-owner 42 -j RETURN"
        );
        let all = RuleKind::TcpPort { port: PortSpec::Range(0, 65535), verdict: Verdict::Return };
        assert_eq!(line(all, Family::V4), None);
        let iface = IfaceName::parse("-c", "eth+").unwrap();
        let kind = RuleKind::InInterface { iface, verdict: Verdict::Return };
        assert_eq!(line(kind, Family::V4).unwrap(), "-A ISTIO_OUTPUT -i eth+ -j RETURN");
    }
}
