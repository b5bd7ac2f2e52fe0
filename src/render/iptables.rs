//! The plan as iptables rules (tokens with a typed table, chain and position), and the plan's
//! restore input, byte for byte as upstream writes it for `iptables-restore --noflush`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::restore::{Op, RestoreInput};

use crate::chains;
use crate::plan::{
    Family, Owner, Plan, Position, Proto, Rule, RuleKind, ServerMatch, Table, UdpPortMatch, Verdict, AGENT_DNS_PORT,
    DNS_PORT,
};

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

    /// The match and target tokens as one space-separated spec.
    pub fn spec(&self) -> String {
        self.args.join(" ")
    }

    fn add_op(&self) -> Op {
        Op::Add { chain: self.chain.to_string(), position: self.position, spec: self.spec() }
    }
}

/// One rule as `iptables -S` lists it (`-A CHAIN args…`), whatever its planned position; for
/// `explain`, which shows the rules a packet meets in the backend's own syntax.
pub fn rule_spec(rule: &Rule) -> String {
    TokenRule { position: Position::Append, ..TokenRule::from_rule(rule) }.add_op().line()
}

/// The rules of one family as tokens, in plan order.
pub fn token_rules(plan: &Plan, family: Family) -> Vec<TokenRule> {
    plan.rules_for(family).map(TokenRule::from_rule).collect()
}

/// The iptables-restore input for one family; empty when the family has no rules.
pub fn restore_text(plan: &Plan, family: Family) -> String {
    restore_input(&token_rules(plan, family)).render()
}

/// The plan's rules as one restore input: per table (in name order), the `-N` declarations of
/// every chain a rule is in or jumps to, then the rules in plan order.
pub fn restore_input(rules: &[TokenRule]) -> RestoreInput {
    let mut tables: BTreeMap<Table, Vec<Op>> = BTreeMap::new();
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
        tables.entry(rule.table).or_default().push(rule.add_op());
    }
    let mut input = RestoreInput::default();
    for (table, ops) in tables {
        input.push_block(table, ops);
    }
    input
}

/// Upstream's per-rule `iptables -t T -C …` checks as one restore input: a restore stops at the
/// first `-C` that does not match, so a single process answers "are all planned rules present?".
pub fn check_input(rules: &[TokenRule]) -> RestoreInput {
    let mut input = RestoreInput::default();
    let mut tables: Vec<Table> = rules.iter().map(|rule| rule.table).collect();
    tables.sort();
    tables.dedup();
    for table in tables {
        let checks = rules
            .iter()
            .filter(|rule| rule.table == table)
            .map(|rule| Op::Check { chain: rule.chain.to_string(), spec: rule.spec() });
        input.table(table).extend(checks);
    }
    input
}

/// Adds `-N chain` the first time a (chain, table) pair is seen, unless iptables provides it.
fn declare<'a>(
    tables: &mut BTreeMap<Table, Vec<Op>>,
    seen: &mut HashSet<(&'a str, Table)>,
    chain: &'a str,
    table: Table,
) {
    let ops = tables.entry(table).or_default();
    if seen.insert((chain, table)) && !chains::is_built_in_target(chain) {
        ops.push(Op::NewChain(chain.to_string()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: Table, chain: &'static str, position: Position, args: &[&str]) -> TokenRule {
        TokenRule { table, chain, position, args: args.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn check_input_turns_every_rule_into_a_check() {
        let rules = [
            rule(Table::Nat, "OUTPUT", Position::Append, &["-j", "ISTIO_OUTPUT"]),
            rule(Table::Mangle, "ISTIO_INBOUND", Position::Insert(2), &["-p", "tcp", "-j", "RETURN"]),
        ];
        assert_eq!(
            check_input(&rules).render(),
            "* mangle\n-C ISTIO_INBOUND -p tcp -j RETURN\nCOMMIT\n* nat\n-C OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
        );
    }

    #[test]
    fn the_restore_input_declares_chains_before_the_rules() {
        let rules = [
            rule(Table::Nat, "OUTPUT", Position::Append, &["-j", "ISTIO_OUTPUT"]),
            rule(Table::Nat, "ISTIO_OUTPUT", Position::Insert(1), &["-j", "RETURN"]),
        ];
        assert_eq!(
            restore_input(&rules).render(),
            "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n-I ISTIO_OUTPUT 1 -j RETURN\nCOMMIT\n"
        );
    }
}
