//! Restore inputs that change a family's state: removal of Istio's rules, guardrails, and the
//! combination with the planned rules.
//!
//! Upstream removes only what the *current* configuration would create (`apply.md` §3.7), one
//! `iptables -D/-F/-X` process per line with errors ignored, so chains left by a different
//! earlier configuration (TPROXY's mangle chains when the pod is now REDIRECT) stay forever.
//! Here removal is computed from the `-save` state instead: every ISTIO chain and every jump
//! into one, plus the rules in built-in chains that are provably Istio's (see [`Recogniser`]).
//! A rule in a built-in chain that cannot be told apart from the pod's own rules stays: the
//! pod's `-i eth1 -j RETURN` looks exactly like an interface exclusion (`-c eth1`) of an
//! earlier configuration, so such exclusions are removed only when the current plan has them.
//! Because every line names something that exists, the whole removal is one restore input that
//! cannot fail half-way, and it can share a table's COMMIT with the new rules (atomic per
//! table).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::render::iptables::TokenRule;

use crate::chains::{self, is_istio};

use super::state::State;

/// The DROP rules that keep traffic out while chains are rebuilt (`apply.md` §3.8), in
/// upstream's order. Inserted at position 1 each, so the last is on top.
const GUARDRAILS: [(&str, &str); 6] =
    [("INPUT", "tcp"), ("INPUT", "udp"), ("FORWARD", "tcp"), ("FORWARD", "udp"), ("OUTPUT", "tcp"), ("OUTPUT", "udp")];

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
fn target(line: &str) -> Option<&str> {
    let tokens: Vec<&str> = line.split(' ').collect();
    tokens.windows(2).find(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto")).map(|w| w[1])
}

/// The `-i` interface of a `-save` rule line, unless negated.
fn in_interface(line: &str) -> Option<&str> {
    let tokens: Vec<&str> = line.split(' ').collect();
    tokens.windows(2).enumerate().find(|(at, w)| w[0] == "-i" && (*at == 0 || tokens[at - 1] != "!")).map(|(_, w)| w[1])
}

/// Lines per table (`filter`, `mangle`, `nat`, `raw`) of one restore input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    blocks: Vec<(String, Vec<String>)>,
}

impl Batch {
    fn block(&mut self, table: &str) -> &mut Vec<String> {
        let index = match self.blocks.iter().position(|(t, _)| t == table) {
            Some(index) => index,
            None => {
                self.blocks.push((table.to_string(), Vec::new()));
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[index].1
    }

    /// Appends a separate block, committed on its own (guardrails before and after the rest).
    fn push_block(&mut self, table: &str, lines: Vec<String>) {
        if !lines.is_empty() {
            self.blocks.push((table.to_string(), lines));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.iter().all(|(_, lines)| lines.is_empty())
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (table, lines) in self.blocks.iter().filter(|(_, lines)| !lines.is_empty()) {
            let _ = writeln!(out, "* {table}");
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
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
    table: String,
    /// (b): `-A CHAIN ARGS` of the plan's built-in-chain rules of this table, consumed on use.
    own: Vec<String>,
    /// (c): marks with both connmark halves present, and whether an owner rule is.
    tproxy_marks: Vec<String>,
    /// (d): interfaces with an Istio kube-virt jump, and those whose RETURN was taken.
    kube_virt: Vec<String>,
    kube_virt_taken: Vec<String>,
}

impl Recogniser {
    fn new(table: &str, chains: &BTreeMap<String, Vec<String>>, plan: &[TokenRule]) -> Recogniser {
        let own = plan
            .iter()
            .filter(|rule| rule.table.iptables_name() == table && chains::is_built_in(rule.chain))
            .map(|rule| format!("-A {} {}", rule.chain, rule.args.join(" ")))
            .collect();
        let chain = |name: &str| chains.get(name).into_iter().flatten();
        let mut tproxy_marks = Vec::new();
        if table == "mangle" && chain("OUTPUT").any(|line| captures(OWNER_SET_MARK, line).is_some()) {
            let marks = |pattern, name| -> Vec<String> {
                chain(name).filter_map(|line| captures(pattern, line)).flatten().map(str::to_string).collect()
            };
            let restored = marks(RESTORE_MARK, "OUTPUT");
            tproxy_marks = marks(SAVE_MARK, "PREROUTING").into_iter().filter(|m| restored.contains(m)).collect();
        }
        let kube_virt = if table == "nat" {
            chain("PREROUTING")
                .filter(|line| target(line) == Some("ISTIO_REDIRECT"))
                .filter_map(|line| in_interface(line))
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        Recogniser { table: table.to_string(), own, tproxy_marks, kube_virt, kube_virt_taken: Vec::new() }
    }

    /// Whether `line` of `chain` is Istio's; call once per rule, in dump order.
    fn is_istio(&mut self, chain: &str, line: &str) -> bool {
        if target(line).is_some_and(is_istio) {
            return true;
        }
        if !chains::is_built_in(chain) {
            return false;
        }
        let kube_virt = (self.table == "nat")
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
fn recognised<'a>(
    table: &str,
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
        for (chain, _) in recognised(table, chains, plan) {
            if chains::is_built_in(chain) {
                *found.entry(chain).or_default() += 1;
            }
        }
        found.into_iter().any(|(chain, found)| {
            found > plan.iter().filter(|rule| rule.table.iptables_name() == table && rule.chain == chain).count()
        })
    })
}

/// Whether `current` holds anything of Istio's: an ISTIO chain or a recognised rule.
pub(crate) fn has_istio_rules(current: &State, plan: &[TokenRule]) -> bool {
    current.tables.iter().any(|(table, chains)| {
        chains.keys().any(|chain| is_istio(chain)) || !recognised(table, chains, plan).is_empty()
    })
}

/// Everything Istio in `current`, as removal lines per table: `-D` for the rules of
/// [`Recogniser`], then `-F` and `-X` for every ISTIO chain (flushing all first, so jumps
/// between ISTIO chains cannot block a delete).
fn removal(current: &State, plan: &[TokenRule]) -> Vec<(String, Vec<String>)> {
    let mut tables = Vec::new();
    for (table, chains) in &current.tables {
        let mut lines: Vec<String> = recognised(table, chains, plan)
            .into_iter()
            .filter_map(|(_, rule)| rule.strip_prefix("-A "))
            .map(|rest| format!("-D {rest}"))
            .collect();
        let istio: Vec<&String> = chains.keys().filter(|chain| is_istio(chain)).collect();
        lines.extend(istio.iter().map(|chain| format!("-F {chain}")));
        lines.extend(istio.iter().map(|chain| format!("-X {chain}")));
        if !lines.is_empty() {
            tables.push((table.clone(), lines));
        }
    }
    tables
}

/// The blocks of our own restore text (`* table` … `COMMIT`), without the markers.
fn restore_blocks(restore_text: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in restore_text.lines() {
        if let Some(table) = line.strip_prefix('*') {
            blocks.push((table.trim().to_string(), Vec::new()));
        } else if line != "COMMIT" && !line.is_empty() {
            if let Some((_, lines)) = blocks.last_mut() {
                lines.push(line.to_string());
            }
        }
    }
    blocks
}

/// What one family's run feeds to `-restore`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Steps<'a> {
    /// Remove everything Istio found in this state.
    pub remove: Option<&'a State>,
    /// Arm guardrails first (pre-cleaning stale ones seen in the state) and disarm them last.
    pub guard: Option<&'a State>,
    /// Our restore text.
    pub apply: Option<&'a str>,
}

/// One restore input for a family: `[guardrails] [per table: removal, then new rules]
/// [guardrail removal]`. Removal and new rules of a table share one COMMIT, so the table never
/// shows a half-built state.
pub(crate) fn compose(steps: Steps<'_>, plan: &[TokenRule]) -> Batch {
    let mut batch = Batch::default();
    if let Some(state) = steps.guard {
        let stale = state.rules("filter").cloned().collect::<Vec<_>>();
        let mut lines: Vec<String> = GUARDRAILS
            .iter()
            .filter(|(chain, proto)| stale.contains(&format!("-A {chain} -p {proto} -j DROP")))
            .map(|(chain, proto)| format!("-D {chain} -p {proto} -j DROP"))
            .collect();
        lines.extend(GUARDRAILS.iter().map(|(chain, proto)| format!("-I {chain} 1 -p {proto} -j DROP")));
        batch.push_block("filter", lines);
    }
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(state) = steps.remove {
        for (table, lines) in removal(state, plan) {
            tables.entry(table).or_default().extend(lines);
        }
    }
    if let Some(text) = steps.apply {
        for (table, lines) in restore_blocks(text) {
            tables.entry(table).or_default().extend(lines);
        }
    }
    for (table, lines) in tables {
        batch.block(&table).extend(lines);
    }
    if steps.guard.is_some() {
        batch.push_block("filter", guardrail_removal());
    }
    batch
}

/// Disarms the guardrails (one occurrence of each).
fn guardrail_removal() -> Vec<String> {
    GUARDRAILS.iter().map(|(chain, proto)| format!("-D {chain} -p {proto} -j DROP")).collect()
}

/// What one restore input of ours adds, per table: the chains it declares, and how many rules
/// it appends or inserts per chain.
#[derive(Debug, Default)]
struct Written {
    declared: Vec<String>,
    rules: BTreeMap<String, usize>,
}

fn written(input: &str) -> BTreeMap<String, Written> {
    let mut tables: BTreeMap<String, Written> = BTreeMap::new();
    for (table, lines) in restore_blocks(input) {
        let entry = tables.entry(table).or_default();
        for line in lines {
            let mut tokens = line.split(' ');
            match (tokens.next(), tokens.next()) {
                (Some("-N"), Some(chain)) => entry.declared.push(chain.to_string()),
                (Some("-A" | "-I"), Some(chain)) => *entry.rules.entry(chain.to_string()).or_default() += 1,
                _ => {}
            }
        }
    }
    tables
}

fn has_chain(chains: Option<&BTreeMap<String, Vec<String>>>, chain: &str) -> bool {
    chains.is_some_and(|chains| chains.contains_key(chain))
}

/// Undoes what `input` (a restore input of this run, committed wholly or in part) did between
/// two dumps of the same family. Only this run's additions are taken back: ISTIO chains it
/// declared that `before` lacked are flushed and deleted, and of the rules that appeared in a
/// chain it wrote to, at most as many as it wrote there, and in built-in chains only those that
/// are Istio's or a guardrail, so a rule someone else added meanwhile stays. What existed before
/// is left alone, unless `remove_all`: then everything Istio that remains goes too (the family
/// must end with none of Istio's rules rather than a mix of an old and a new configuration).
pub(crate) fn undo(before: &State, after: &State, input: &str, remove_all: bool, plan: &[TokenRule]) -> Batch {
    let written = written(input);
    let mut batch = Batch::default();
    let mut remaining = State::default();
    for (table, chains) in &after.tables {
        let had = before.tables.get(table);
        let ours = written.get(table);
        let declared = |chain: &String| ours.is_some_and(|w| w.declared.contains(chain));
        let new_chains: Vec<&String> =
            chains.keys().filter(|c| is_istio(c) && !has_chain(had, c) && declared(c)).collect();
        let istio_rules = recognised(table, chains, plan);
        let mut lines = Vec::new();
        let kept = remaining.tables.entry(table.clone()).or_default();
        for (chain, rules) in chains.iter().filter(|(c, _)| !new_chains.contains(c)) {
            let mut old: Vec<&String> = had.and_then(|h| h.get(chain)).map(|r| r.iter().collect()).unwrap_or_default();
            let mut budget = ours.and_then(|w| w.rules.get(chain)).copied().unwrap_or(0);
            let kept = kept.entry(chain.clone()).or_default();
            for rule in rules {
                let ours = !chains::is_built_in(chain)
                    || istio_rules.contains(&(chain.as_str(), rule.as_str()))
                    || GUARDRAILS.iter().any(|(c, proto)| *rule == format!("-A {c} -p {proto} -j DROP"));
                match old.iter().position(|o| *o == rule) {
                    Some(at) => {
                        old.remove(at);
                        kept.push(rule.clone());
                    }
                    None if ours && budget > 0 => {
                        budget -= 1;
                        lines.extend(rule.strip_prefix("-A ").map(|rest| format!("-D {rest}")));
                    }
                    None => kept.push(rule.clone()),
                }
            }
        }
        lines.extend(new_chains.iter().map(|c| format!("-F {c}")));
        lines.extend(new_chains.iter().map(|c| format!("-X {c}")));
        batch.push_block(table, lines);
    }
    if remove_all {
        for (table, lines) in removal(&remaining, plan) {
            batch.block(&table).extend(lines);
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Position, Table};

    const TPROXY_THEN_FOREIGN: &str = "*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
:ISTIO_INBOUND - [0:0]
-A PREROUTING -i eth9 -j RETURN
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A PREROUTING -p udp -j MARK --set-xmark 0x1/0xffffffff
-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_INBOUND -p tcp -j ISTIO_DIVERT
COMMIT
*nat
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT
COMMIT
";

    fn rule(table: Table, chain: &'static str, args: &str) -> TokenRule {
        TokenRule { table, chain, position: Position::Append, args: args.split(' ').map(String::from).collect() }
    }

    fn removal_text(state: &str, plan: &[TokenRule]) -> String {
        compose(Steps { remove: Some(&State::parse(state)), ..Steps::default() }, plan).render()
    }

    #[test]
    fn removal_takes_everything_istio_and_nothing_else() {
        let text = removal_text(TPROXY_THEN_FOREIGN, &[]);
        // eth9's exclusion looks exactly like a rule of the pod's own, so it stays.
        assert_eq!(
            text,
            "* mangle
-D OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-D OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-D OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-F ISTIO_DIVERT
-F ISTIO_INBOUND
-X ISTIO_DIVERT
-X ISTIO_INBOUND
COMMIT
"
        );
    }

    #[test]
    fn interface_returns_are_the_pods_own_unless_planned() {
        let state =
            "*nat\n-A PREROUTING -i eth1 -j RETURN\n-A PREROUTING -i eth2 -j RETURN\n-A OUTPUT -o eth1 -j RETURN\n\
                     -A OUTPUT -j ISTIO_OUTPUT\n-A PREROUTING -i eth9 -j RETURN\n-A OUTPUT -o eth9 -j RETURN\nCOMMIT\n";
        assert_eq!(removal_text(state, &[]), "* nat\n-D OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n");
        // The current plan excludes eth9 (`-c eth9`): its pair is upstream's to delete, once.
        let plan =
            [rule(Table::Nat, "PREROUTING", "-i eth9 -j RETURN"), rule(Table::Nat, "OUTPUT", "-o eth9 -j RETURN")];
        let doubled = format!("{state}*nat\n-A PREROUTING -i eth9 -j RETURN\nCOMMIT\n");
        assert_eq!(
            removal_text(&doubled, &plan),
            "* nat\n-D OUTPUT -j ISTIO_OUTPUT\n-D OUTPUT -o eth9 -j RETURN\n-D PREROUTING -i eth9 -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn kube_virt_return_goes_with_its_redirect() {
        let state = "*nat\n-A PREROUTING -d 10.0.0.0/8 -i veth0 -j ISTIO_REDIRECT\n-A PREROUTING -i veth0 -j RETURN\n\
                     -A PREROUTING -i veth0 -j RETURN\n-A PREROUTING -i veth1 -j RETURN\nCOMMIT\n";
        assert_eq!(
            removal_text(state, &[]),
            "* nat\n-D PREROUTING -d 10.0.0.0/8 -i veth0 -j ISTIO_REDIRECT\n-D PREROUTING -i veth0 -j RETURN\nCOMMIT\n"
        );
        // Planned (`-k veth0` now): still once.
        let plan = [rule(Table::Nat, "PREROUTING", "-i veth0 -j RETURN")];
        assert_eq!(
            removal_text(state, &plan),
            "* nat\n-D PREROUTING -d 10.0.0.0/8 -i veth0 -j ISTIO_REDIRECT\n-D PREROUTING -i veth0 -j RETURN\nCOMMIT\n"
        );
        // A negated interface is not a kube-virt jump.
        let negated = "*nat\n-A PREROUTING ! -i veth0 -j ISTIO_REDIRECT\n-A PREROUTING -i veth0 -j RETURN\nCOMMIT\n";
        assert_eq!(removal_text(negated, &[]), "* nat\n-D PREROUTING ! -i veth0 -j ISTIO_REDIRECT\nCOMMIT\n");
    }

    #[test]
    fn tproxy_mark_rules_are_recognised_only_as_a_set() {
        let lone = "*mangle\n-A OUTPUT -o lo -p tcp -m mark --mark 0x7 -j RETURN\n\
                    -A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 5 -j MARK --set-xmark 0x53a/0xffffffff\nCOMMIT\n";
        assert_eq!(removal_text(lone, &[]), "");
        // The set with mark 0x539 does not make a RETURN on another mark Istio's.
        let state =
            format!("{TPROXY_THEN_FOREIGN}*mangle\n-A OUTPUT -o lo -p tcp -m mark --mark 0x7 -j RETURN\nCOMMIT\n");
        assert!(!removal_text(&state, &[]).contains("0x7 "));
        // Without the connmark restore half, nothing of the set is recognised.
        let half = TPROXY_THEN_FOREIGN.replace("--restore-mark", "--restore-mark-not");
        let text = removal_text(&half, &[]);
        assert!(!text.contains("0x53a") && !text.contains("--mark 0x539 -j RETURN"), "{text}");
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

    #[test]
    fn planned_built_in_rules_are_removed_when_save_shows_them_verbatim() {
        let plan = [rule(Table::Mangle, "PREROUTING", "-i eth9 -j RETURN")];
        let text = removal_text(TPROXY_THEN_FOREIGN, &plan);
        assert!(text.contains("-D PREROUTING -i eth9 -j RETURN\n"), "{text}");
        assert!(!text.contains("0x1/0xffffffff"), "foreign rule touched: {text}");
    }

    #[test]
    fn reconcile_guards_removes_and_applies_in_one_input() {
        let state = State::parse("*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n*nat\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n");
        let apply = "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n";
        let steps = Steps { remove: Some(&state), guard: Some(&state), apply: Some(apply) };
        assert_eq!(
            compose(steps, &[]).render(),
            "* filter
-D INPUT -p udp -j DROP
-I INPUT 1 -p tcp -j DROP
-I INPUT 1 -p udp -j DROP
-I FORWARD 1 -p tcp -j DROP
-I FORWARD 1 -p udp -j DROP
-I OUTPUT 1 -p tcp -j DROP
-I OUTPUT 1 -p udp -j DROP
COMMIT
* nat
-F ISTIO_OUTPUT
-X ISTIO_OUTPUT
-N ISTIO_OUTPUT
-A OUTPUT -j ISTIO_OUTPUT
COMMIT
* filter
-D INPUT -p tcp -j DROP
-D INPUT -p udp -j DROP
-D FORWARD -p tcp -j DROP
-D FORWARD -p udp -j DROP
-D OUTPUT -p tcp -j DROP
-D OUTPUT -p udp -j DROP
COMMIT
"
        );
    }

    #[test]
    fn nothing_to_do_is_an_empty_input() {
        assert!(compose(Steps::default(), &[]).is_empty());
        assert_eq!(compose(Steps::default(), &[]).render(), "");
    }

    #[test]
    fn undo_removes_only_what_this_run_wrote() {
        let before = State::parse("*nat\n:ISTIO_OLD - [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n");
        let after = State::parse(
            "*filter\n-A INPUT -p tcp -j DROP\n-A INPUT -p tcp -m tcp --dport 9 -j DROP\nCOMMIT\n\
             *nat\n:ISTIO_OLD - [0:0]\n:ISTIO_NEW - [0:0]\n:ISTIO_OTHER - [0:0]\n\
             -A OUTPUT -j ACCEPT\n-A OUTPUT -j ACCEPT\n-A OUTPUT -j ISTIO_NEW\n-A ISTIO_NEW -j RETURN\nCOMMIT\n",
        );
        let input = "* filter\n-I INPUT 1 -p tcp -j DROP\nCOMMIT\n* nat\n-N ISTIO_NEW\n-A ISTIO_NEW -j RETURN\n\
                     -A OUTPUT -j ISTIO_NEW\nCOMMIT\n";
        // The second ACCEPT, the port 9 DROP and ISTIO_OTHER appeared meanwhile, not from this run.
        assert_eq!(
            undo(&before, &after, input, false, &[]).render(),
            "* filter\n-D INPUT -p tcp -j DROP\nCOMMIT\n* nat\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\nCOMMIT\n"
        );
        assert!(undo(&after, &after, input, false, &[]).is_empty());
        // Removing all also takes what was Istio's before the run (but nothing foreign).
        assert_eq!(
            undo(&before, &after, input, true, &[]).render(),
            "* filter\n-D INPUT -p tcp -j DROP\nCOMMIT\n\
             * nat\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\n-F ISTIO_OLD\n-F ISTIO_OTHER\n-X ISTIO_OLD\n-X ISTIO_OTHER\nCOMMIT\n"
        );
    }
}
