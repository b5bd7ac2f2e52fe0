//! Which rules of a `-save` state are Istio's. Every ISTIO chain is; in built-in chains only
//! the rules that are provably Istio's (see [`Recogniser`]), because a rule that cannot be told
//! apart from the pod's own must stay: the pod's `-i eth1 -j RETURN` looks exactly like an
//! interface exclusion (`-c eth1`) of an earlier configuration, so such exclusions count as
//! Istio's only when the current plan has them.

use std::collections::BTreeMap;

use crate::chains::{self, is_istio};
use crate::plan::Table;
use crate::render::iptables::TokenRule;

use super::state::State;

/// The rules TPROXY mode puts in mangle's built-in chains, as `-save` prints them (`*` is any
/// one token and is captured, `…` any rest). They are recognised only as the set upstream
/// writes: the connmark save/restore pair with one mark, and the owner rules that set 0x53a
/// (1338, the fixed mark of the proxy's own loopback traffic). A single `-m mark --mark N -j
/// RETURN` on `lo` is an ordinary rule a pod may well have.
const SAVE_MARK: &[&str] =
    &["-A", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", "*", "-j", "CONNMARK", "--save-mark", "…"];
const RESTORE_MARK: &[&str] =
    &["-A", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", "*", "-j", "CONNMARK", "--restore-mark", "…"];
const LOOPBACK_MARK_RETURN: &[&str] =
    &["-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-m", "mark", "--mark", "*", "-j", "RETURN"];
const OWNER_SET_MARK: &[&str] = &[
    "-A",
    "OUTPUT",
    "!",
    "-d",
    "*",
    "-o",
    "lo",
    "-p",
    "tcp",
    "-m",
    "owner",
    "*",
    "*",
    "-j",
    "MARK",
    "--set-xmark",
    "0x53a/0xffffffff",
];

/// A kube-virt short-circuit (`-k`) as `-save` prints it.
const KUBE_VIRT_RETURN: &[&str] = &["-A", "PREROUTING", "-i", "*", "-j", "RETURN"];

/// The tokens `*` stands for, when `line` matches `pattern`.
fn captures<'a>(pattern: &[&str], line: &'a str) -> Option<Vec<&'a str>> {
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut captured = Vec::new();
    let mut at = 0;
    for want in pattern {
        match (*want, tokens.get(at)) {
            ("…", _) => return Some(captured),
            ("*", Some(token)) => captured.push(*token),
            (want, Some(token)) if want == *token => {}
            _ => return None,
        }
        at += 1;
    }
    (at == tokens.len()).then_some(captured)
}

/// The first `-j`/`-g` target of a `-save` rule line.
pub(super) fn target(line: &str) -> Option<&str> {
    let tokens: Vec<&str> = line.split(' ').collect();
    tokens.windows(2).find(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto")).map(|w| w[1])
}

/// The `-i` interface of a `-save` rule line, unless negated.
fn in_interface(line: &str) -> Option<&str> {
    let tokens: Vec<&str> = line.split(' ').collect();
    tokens.windows(2).enumerate().find(|(at, w)| w[0] == "-i" && (*at == 0 || tokens[at - 1] != "!")).map(|(_, w)| w[1])
}

/// Decides which rules of one table are Istio's, chain by chain. A rule in a built-in chain
/// is removed only if it is provably Istio's:
/// (a) it jumps into an ISTIO chain (in any chain: an ISTIO chain cannot be deleted while
///     something jumps to it);
/// (b) it is word for word a rule the current plan puts in that built-in chain, as many times
///     as the plan has it (what upstream's own cleanup deletes);
/// (c) it belongs to a complete TPROXY mark set in mangle (see [`SAVE_MARK`]);
/// (d) it is a kube-virt `-i K -j RETURN` in nat PREROUTING, once per K, next to an Istio
///     `-i K … -j ISTIO_REDIRECT`.
struct Recogniser {
    table: Table,
    /// (b): `-A CHAIN ARGS` of the plan's built-in-chain rules of this table, consumed on use.
    own: Vec<String>,
    /// (c): marks with both connmark halves present, and whether an owner rule is.
    tproxy_marks: Vec<String>,
    /// (d): interfaces with an Istio kube-virt jump, and those whose RETURN was taken.
    kube_virt: Vec<String>,
    kube_virt_taken: Vec<String>,
}

impl Recogniser {
    fn new(table: Table, chains: &BTreeMap<String, Vec<String>>, plan: &[TokenRule]) -> Recogniser {
        let own = plan
            .iter()
            .filter(|rule| rule.table == table && chains::is_built_in(rule.chain))
            .map(|rule| format!("-A {} {}", rule.chain, rule.args.join(" ")))
            .collect();
        let chain = |name: &str| chains.get(name).into_iter().flatten();
        let mut tproxy_marks = Vec::new();
        if table == Table::Mangle && chain("OUTPUT").any(|line| captures(OWNER_SET_MARK, line).is_some()) {
            let marks = |pattern, name| -> Vec<String> {
                chain(name).filter_map(|line| captures(pattern, line)).flatten().map(str::to_string).collect()
            };
            let restored = marks(RESTORE_MARK, "OUTPUT");
            tproxy_marks = marks(SAVE_MARK, "PREROUTING").into_iter().filter(|m| restored.contains(m)).collect();
        }
        let kube_virt = if table == Table::Nat {
            chain("PREROUTING")
                .filter(|line| target(line) == Some("ISTIO_REDIRECT"))
                .filter_map(|line| in_interface(line))
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        Recogniser { table, own, tproxy_marks, kube_virt, kube_virt_taken: Vec::new() }
    }

    /// Whether `line` of `chain` is Istio's; call once per rule, in dump order.
    fn is_istio(&mut self, chain: &str, line: &str) -> bool {
        if target(line).is_some_and(is_istio) {
            return true;
        }
        if !chains::is_built_in(chain) {
            return false;
        }
        let kube_virt = (self.table == Table::Nat)
            .then(|| captures(KUBE_VIRT_RETURN, line))
            .flatten()
            .and_then(|c| c.first().map(|k| k.to_string()))
            .filter(|k| self.kube_virt.contains(k));
        if let Some(at) = self.own.iter().position(|own| own == line) {
            self.own.remove(at);
            self.kube_virt_taken.extend(kube_virt);
            return true;
        }
        if !self.tproxy_marks.is_empty() {
            let marked = [SAVE_MARK, RESTORE_MARK, LOOPBACK_MARK_RETURN]
                .iter()
                .filter_map(|pattern| captures(pattern, line))
                .any(|mark| mark.first().is_some_and(|m| self.tproxy_marks.iter().any(|t| t == m)));
            if marked || captures(OWNER_SET_MARK, line).is_some() {
                return true;
            }
        }
        match kube_virt {
            Some(iface) if !self.kube_virt_taken.contains(&iface) => {
                self.kube_virt_taken.push(iface);
                true
            }
            _ => false,
        }
    }
}

/// The rules of one table's non-ISTIO chains that are Istio's, as (chain, raw `-A` line), in
/// dump order.
pub(super) fn recognised<'a>(
    table: Table,
    chains: &'a BTreeMap<String, Vec<String>>,
    plan: &[TokenRule],
) -> Vec<(&'a str, &'a str)> {
    let mut recogniser = Recogniser::new(table, chains, plan);
    let mut lines = Vec::new();
    for (chain, rules) in chains.iter().filter(|(chain, _)| !is_istio(chain)) {
        for rule in rules {
            if recogniser.is_istio(chain, rule) {
                lines.push((chain.as_str(), rule.as_str()));
            }
        }
    }
    lines
}

/// Whether `current` has more Istio rules in some built-in chain than the plan puts there:
/// rules of an earlier configuration that the `-C` checks (which only ask whether the planned
/// rules exist) cannot see, such as a kube-virt jump the pod no longer has.
pub(crate) fn has_stale_built_in_rules(current: &State, plan: &[TokenRule]) -> bool {
    current.tables.iter().any(|(table, chains)| {
        let mut found: BTreeMap<&str, usize> = BTreeMap::new();
        for (chain, _) in recognised(*table, chains, plan) {
            if chains::is_built_in(chain) {
                *found.entry(chain).or_default() += 1;
            }
        }
        found.into_iter().any(|(chain, found)| {
            found > plan.iter().filter(|rule| rule.table == *table && rule.chain == chain).count()
        })
    })
}

/// Whether `current` holds anything of Istio's: an ISTIO chain or a recognised rule.
pub(crate) fn has_istio_rules(current: &State, plan: &[TokenRule]) -> bool {
    current.tables.iter().any(|(table, chains)| {
        chains.keys().any(|chain| is_istio(chain)) || !recognised(*table, chains, plan).is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Position;

    fn rule(table: Table, chain: &'static str, args: &str) -> TokenRule {
        TokenRule { table, chain, position: Position::Append, args: args.split(' ').map(String::from).collect() }
    }

    #[test]
    fn stale_built_in_rules_are_counted_against_the_plan() {
        let state = State::parse(
            "*nat\n-A PREROUTING -i veth0 -j ISTIO_REDIRECT\n-A PREROUTING -i veth0 -j RETURN\n-A PREROUTING -i eth1 -j RETURN\n\
             -A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n",
        );
        let output = rule(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT");
        assert!(has_stale_built_in_rules(&state, std::slice::from_ref(&output)));
        let kube_virt = [
            output,
            rule(Table::Nat, "PREROUTING", "-i veth0 -j RETURN"),
            rule(Table::Nat, "PREROUTING", "-i veth0 -j ISTIO_REDIRECT"),
        ];
        assert!(!has_stale_built_in_rules(&state, &kube_virt));
        assert!(has_istio_rules(&state, &[]));
        assert!(!has_istio_rules(&State::parse("*nat\n-A PREROUTING -i eth1 -j RETURN\nCOMMIT\n"), &[]));
    }
}
