//! iptables-restore text, per family, byte for byte as upstream writes it for
//! `iptables-restore --noflush`; and the cleanup commands that undo a plan.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::plan::{
    Family, Owner, Plan, Position, Proto, Rule, RuleKind, ServerMatch, Table, UdpPortMatch, Verdict, AGENT_DNS_PORT,
    DNS_PORT,
};

/// Chains and targets that iptables provides; anything else must be created with `-N`.
const BUILT_IN: [&str; 8] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING", "ACCEPT", "RETURN", "DROP"];

/// One rule as iptables tokens: `-A CHAIN args…` or `-I CHAIN POS args…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRule {
    pub table: Table,
    pub chain: &'static str,
    pub position: Position,
    pub args: Vec<String>,
}

impl TokenRule {
    fn from_rule(rule: &Rule) -> Self {
        TokenRule {
            table: rule.table,
            chain: rule.chain.iptables_name(),
            position: rule.position,
            args: args(&rule.kind),
        }
    }

    /// The `-j` target, when the rule ends with one (what the `-N` pass for targets looks at).
    fn final_jump_target(&self) -> Option<&str> {
        match self.args.as_slice() {
            [.., jump, target] if jump == "-j" => Some(target),
            _ => None,
        }
    }

    /// The rule as restore-file text (`-A …` / `-I … N …`), without the table.
    pub fn line(&self) -> String {
        let mut line = match self.position {
            Position::Append => format!("-A {}", self.chain),
            Position::Insert(pos) => format!("-I {} {pos}", self.chain),
        };
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

/// One rule as `iptables -S` lists it (`-A CHAIN args…`), whatever its planned position; for
/// `explain`, which shows the rules a packet meets in the backend's own syntax.
pub fn rule_spec(rule: &Rule) -> String {
    TokenRule { position: Position::Append, ..TokenRule::from_rule(rule) }.line()
}

/// The rules of one family as tokens, in plan order.
pub fn token_rules(plan: &Plan, family: Family) -> Vec<TokenRule> {
    plan.rules_for(family).map(TokenRule::from_rule).collect()
}

/// The iptables-restore input for one family; empty when the family has no rules.
pub fn restore_text(plan: &Plan, family: Family) -> String {
    render_restore(&token_rules(plan, family))
}

pub fn render_restore(rules: &[TokenRule]) -> String {
    let mut tables: BTreeMap<Table, Vec<String>> = BTreeMap::new();
    let mut seen: HashSet<(&str, Table)> = HashSet::new();
    for rule in rules {
        declare(&mut tables, &mut seen, rule.chain, rule.table);
    }
    // Chains only jumped to (no rules of their own) still need to exist.
    for rule in rules {
        if let Some(target) = rule.final_jump_target() {
            declare(&mut tables, &mut seen, target, rule.table);
        }
    }
    for rule in rules {
        tables.entry(rule.table).or_default().push(rule.line());
    }
    let mut out = String::new();
    for (table, lines) in tables.iter().filter(|(_, lines)| !lines.is_empty()) {
        let _ = writeln!(out, "* {}", table.iptables_name());
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Adds `-N chain` the first time a (chain, table) pair is seen, unless iptables provides it.
fn declare<'a>(
    tables: &mut BTreeMap<Table, Vec<String>>,
    seen: &mut HashSet<(&'a str, Table)>,
    chain: &'a str,
    table: Table,
) {
    let lines = tables.entry(table).or_default();
    if seen.insert((chain, table)) && !BUILT_IN.contains(&chain) {
        lines.push(format!("-N {chain}"));
    }
}

/// The commands (`-t TABLE -D …`, then `-F`/`-X` per chain) that remove a plan's rules and
/// chains, in upstream's order: rules in reverse, then each ISTIO chain flushed and deleted.
/// Rules inside ISTIO chains go away with the flush, so only jumps into them are deleted.
pub fn cleanup_commands(rules: &[TokenRule]) -> Vec<String> {
    let mut commands = Vec::new();
    for rule in rules.iter().rev() {
        let jumps_to_istio = rule.args.windows(2).any(|w| w[0] == "-j" && w[1].starts_with("ISTIO_"));
        if rule.chain.starts_with("ISTIO_") && !jumps_to_istio {
            continue;
        }
        commands.push(format!("-t {} -D {} {}", rule.table.iptables_name(), rule.chain, rule.args.join(" ")));
    }
    let mut flushed = HashSet::new();
    for rule in rules.iter().rev() {
        if !BUILT_IN.contains(&rule.chain) && flushed.insert((rule.chain, rule.table)) {
            let table = rule.table.iptables_name();
            commands.push(format!("-t {table} -F {}", rule.chain));
            commands.push(format!("-t {table} -X {}", rule.chain));
        }
    }
    commands
}

/// Builds one rule's argument tokens.
struct Args(Vec<String>);

impl Args {
    fn new() -> Self {
        Args(Vec::with_capacity(12))
    }

    fn push(mut self, tokens: &[&str]) -> Self {
        self.0.extend(tokens.iter().map(|t| (*t).to_string()));
        self
    }

    fn value(mut self, value: impl ToString) -> Self {
        self.0.push(value.to_string());
        self
    }

    fn owner(self, owner: &Owner, negated: bool) -> Self {
        let (flag, id) = match owner {
            Owner::Uid(id) => ("--uid-owner", id),
            Owner::Gid(id) => ("--gid-owner", id),
        };
        let this = self.push(&["-m", "owner"]);
        let this = if negated { this.push(&["!"]) } else { this };
        this.push(&[flag]).value(id)
    }

    fn verdict(self, verdict: Verdict) -> Self {
        let target = match verdict {
            Verdict::Return => "RETURN",
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::Jump(chain) => chain.iptables_name(),
        };
        self.push(&["-j", target])
    }

    fn done(self) -> Vec<String> {
        self.0
    }
}

fn host(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn args(kind: &RuleKind) -> Vec<String> {
    let a = Args::new();
    match kind {
        RuleKind::Always(v) => a.verdict(*v),
        RuleKind::InInterface { iface, verdict } => a.push(&["-i"]).value(iface).verdict(*verdict),
        RuleKind::OutInterface { iface, verdict } => a.push(&["-o"]).value(iface).verdict(*verdict),
        RuleKind::InInterfaceToDestination { iface, destination, verdict } => {
            a.push(&["-i"]).value(iface).push(&["-d"]).value(destination).verdict(*verdict)
        }
        RuleKind::InvalidState(v) => a.push(&["-m", "conntrack", "--ctstate", "INVALID"]).verdict(*v),
        RuleKind::Tcp(v) => a.push(&["-p", "tcp"]).verdict(*v),
        RuleKind::TcpPort { port, verdict } => {
            a.push(&["-p", "tcp", "--dport"]).value(port.iptables()).verdict(*verdict)
        }
        RuleKind::OutboundPort { proto, port, verdict } => {
            a.push(&["-p", proto.name(), "--dport"]).value(port.iptables()).verdict(*verdict)
        }
        RuleKind::RedirectTcp(port) => a.push(&["-p", "tcp", "-j", "REDIRECT", "--to-ports"]).value(port),
        RuleKind::SetMark(mark) => a.push(&["-j", "MARK", "--set-mark"]).value(mark),
        RuleKind::Tproxy { not_destination, port, mark } => a
            .push(&["!", "-d"])
            .value(not_destination)
            .push(&["-p", "tcp", "-j", "TPROXY", "--tproxy-mark"])
            .value(format!("{mark}/0xffffffff"))
            .push(&["--on-port"])
            .value(port),
        RuleKind::TcpEstablished { port, verdict } => {
            let a = a.push(&["-p", "tcp"]);
            let a = match port {
                Some(port) => a.push(&["--dport"]).value(port.iptables()),
                None => a,
            };
            a.push(&["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]).verdict(*verdict)
        }
        RuleKind::LoopbackOutFrom { source, verdict } => a.push(&["-o", "lo", "-s"]).value(source).verdict(*verdict),
        RuleKind::ProxyLoopbackToInbound { owner, not_destination, tunnel_port, exclude_dns, verdict } => {
            let a = a.push(&["-o", "lo", "!", "-d"]).value(not_destination).push(&["-p", "tcp"]);
            let a = if *exclude_dns {
                a.push(&["-m", "multiport", "!", "--dports"]).value(format!("{DNS_PORT},{tunnel_port}"))
            } else {
                a.push(&["!", "--dport"]).value(tunnel_port)
            };
            a.owner(owner, false).verdict(*verdict)
        }
        RuleKind::LoopbackNotOwner { owner, exclude_dns, verdict } => {
            let a = a.push(&["-o", "lo"]);
            let a = if *exclude_dns { a.push(&["-p", "tcp", "!", "--dport"]).value(DNS_PORT) } else { a };
            a.owner(owner, true).verdict(*verdict)
        }
        RuleKind::OwnerIs { owner, verdict } => a.owner(owner, false).verdict(*verdict),
        RuleKind::NotInGroups { groups, verdict } => {
            groups.iter().fold(a, |a, group| a.owner(&Owner::Gid(group.clone()), true)).verdict(*verdict)
        }
        RuleKind::DnsRedirect { proto, server } => {
            let a = a.push(&["-p", proto.name(), "--dport"]).value(DNS_PORT);
            let a = match server {
                Some(server) => a.push(&["-d"]).value(host(server)),
                None => a,
            };
            // Upstream spells the UDP rule with the singular option; both mean the same.
            let to_ports = if *proto == Proto::Tcp { "--to-ports" } else { "--to-port" };
            a.push(&["-j", "REDIRECT", to_ports]).value(AGENT_DNS_PORT)
        }
        RuleKind::UdpOwnerZone { port, owner, zone } => {
            udp_port(a, *port).owner(owner, false).push(&["-j", "CT", "--zone"]).value(zone)
        }
        RuleKind::UdpServerZone { port, server, zone } => {
            let a = udp_port(a, *port);
            let a = match server {
                ServerMatch::Any => a,
                ServerMatch::Destination(addr) => a.push(&["-d"]).value(host(addr)),
                ServerMatch::Source(addr) => a.push(&["-s"]).value(host(addr)),
            };
            a.push(&["-j", "CT", "--zone"]).value(zone)
        }
        RuleKind::Destination { destination, verdict } => a.push(&["-d"]).value(destination).verdict(*verdict),
        RuleKind::SaveMark(mark) => {
            a.push(&["-p", "tcp", "-m", "mark", "--mark"]).value(mark).push(&["-j", "CONNMARK", "--save-mark"])
        }
        RuleKind::LoopbackOutMarked { mark, verdict } => {
            a.push(&["-p", "tcp", "-o", "lo", "-m", "mark", "--mark"]).value(mark).verdict(*verdict)
        }
        RuleKind::MarkProxyLoopback { owner, not_destination, mark } => a
            .push(&["!", "-d"])
            .value(not_destination)
            .push(&["-p", "tcp", "-o", "lo"])
            .owner(owner, false)
            .push(&["-j", "MARK", "--set-mark"])
            .value(mark),
        RuleKind::RestoreMark(mark) => {
            a.push(&["-p", "tcp", "-m", "connmark", "--mark"]).value(mark).push(&["-j", "CONNMARK", "--restore-mark"])
        }
        RuleKind::TcpMarked { mark, verdict } => {
            a.push(&["-p", "tcp", "-m", "mark", "--mark"]).value(mark).verdict(*verdict)
        }
        RuleKind::LoopbackInFrom { source, verdict } => {
            a.push(&["-p", "tcp", "-s"]).value(source).push(&["-i", "lo"]).verdict(*verdict)
        }
        RuleKind::LoopbackInNotMarked { mark, verdict } => {
            a.push(&["-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark"]).value(mark).verdict(*verdict)
        }
    }
    .done()
}

fn udp_port(a: Args, port: UdpPortMatch) -> Args {
    match port {
        UdpPortMatch::Destination(p) => a.push(&["-p", "udp", "--dport"]).value(p),
        UdpPortMatch::Source(p) => a.push(&["-p", "udp", "--sport"]).value(p),
    }
}

/// Whether a chain name is one of ours (used by state inspection and cleanup).
pub fn is_istio_chain(name: &str) -> bool {
    name.starts_with("ISTIO_")
}
