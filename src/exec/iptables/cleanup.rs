//! Restore inputs that change a family's state: removal of Istio's rules, guardrails, and the
//! combination with the planned rules.
//!
//! Upstream removes only what the *current* configuration would create (`rules.md` §5), one
//! `iptables -D/-F/-X` process per line with errors ignored, so chains left by a different
//! earlier configuration (TPROXY's mangle chains when the pod is now REDIRECT) stay forever.
//! Here removal is computed from the `-save` state instead: every jump into an ISTIO chain,
//! every ISTIO chain, the TPROXY mark rules Istio puts in built-in chains, and the current
//! plan's other built-in-chain rules where `-save` shows them verbatim. Because every line
//! names something that exists, the whole removal is one restore input that cannot fail
//! half-way, and it can share a table's COMMIT with the new rules (atomic per table).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::render::iptables::TokenRule;

use super::state::{is_istio, State};

/// Built-in chains: never flushed or deleted.
const BUILT_IN_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// The DROP rules that keep traffic out while chains are rebuilt (`apply.md` §3.8), in
/// upstream's order. Inserted at position 1 each, so the last is on top.
const GUARDRAILS: [(&str, &str); 6] =
    [("INPUT", "tcp"), ("INPUT", "udp"), ("FORWARD", "tcp"), ("FORWARD", "udp"), ("OUTPUT", "tcp"), ("OUTPUT", "udp")];

/// Rules the TPROXY mode puts in mangle's built-in chains, as `-save` prints them (`*` is any
/// one token, `…` any rest). They carry Istio's marks and connmark plumbing, so a previous
/// TPROXY configuration's copies can be found whatever mark and uids it used. 0x53a is 1338,
/// the fixed mark of the proxy's own loopback traffic.
const TPROXY_TAIL: [&[&str]; 4] = [
    &["-A", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", "*", "-j", "CONNMARK", "--save-mark", "…"],
    &["-A", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", "*", "-j", "CONNMARK", "--restore-mark", "…"],
    &["-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-m", "mark", "--mark", "*", "-j", "RETURN"],
    &[
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
    ],
];

/// `-c`/`-k` interface exclusions as `-save` prints them.
const INTERFACE_RETURN: [&[&str]; 2] =
    [&["-A", "PREROUTING", "-i", "*", "-j", "RETURN"], &["-A", "OUTPUT", "-o", "*", "-j", "RETURN"]];

fn matches(pattern: &[&str], line: &str) -> bool {
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut at = 0;
    for want in pattern {
        match *want {
            "…" => return true,
            "*" if at < tokens.len() => {}
            want if tokens.get(at) == Some(&want) => {}
            _ => return false,
        }
        at += 1;
    }
    at == tokens.len()
}

/// The first `-j`/`-g` target of a `-save` rule line.
fn target(line: &str) -> Option<&str> {
    let tokens: Vec<&str> = line.split(' ').collect();
    tokens.windows(2).find(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto")).map(|w| w[1])
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

/// Everything Istio in `current`, as removal lines per table: `-D` for jumps into ISTIO chains
/// and for recognised Istio rules in built-in chains, then `-F` and `-X` for every ISTIO chain
/// (flushing all first, so jumps between ISTIO chains cannot block a delete).
fn removal(current: &State, plan: &[TokenRule]) -> Vec<(String, Vec<String>)> {
    let own: Vec<String> = plan
        .iter()
        .filter(|rule| BUILT_IN_CHAINS.contains(&rule.chain))
        .map(|rule| format!("{} -A {} {}", rule.table.iptables_name(), rule.chain, rule.args.join(" ")))
        .collect();
    let mut tables = Vec::new();
    for (table, chains) in &current.tables {
        let is_ours = |rule: &String| {
            target(rule).is_some_and(is_istio)
                || (table == "mangle" && TPROXY_TAIL.iter().any(|p| matches(p, rule)))
                || own.contains(&format!("{table} {rule}"))
        };
        // Interface exclusions (`-i X -j RETURN` in PREROUTING, `-o X -j RETURN` in OUTPUT,
        // always as a pair) exist only to skip the Istio rules after them. An earlier
        // configuration's are recognised by that place; the pair goes together because in
        // TPROXY mode nat PREROUTING has nothing of Istio's after its half.
        let mut excluded = Vec::new();
        for rules in ["PREROUTING", "OUTPUT"].iter().filter_map(|chain| chains.get(*chain)) {
            let last_ours = rules.iter().rposition(is_ours);
            for (at, rule) in rules.iter().enumerate() {
                if last_ours.is_some_and(|last| at < last) && INTERFACE_RETURN.iter().any(|p| matches(p, rule)) {
                    excluded.extend(rule.split(' ').nth(3));
                }
            }
        }
        let mut lines = Vec::new();
        for rules in chains.iter().filter(|(chain, _)| !is_istio(chain)).map(|(_, rules)| rules) {
            for rule in rules {
                let exclusion = INTERFACE_RETURN.iter().any(|p| matches(p, rule))
                    && rule.split(' ').nth(3).is_some_and(|iface| excluded.contains(&iface));
                if is_ours(rule) || exclusion {
                    lines.extend(rule.strip_prefix("-A ").map(|rest| format!("-D {rest}")));
                }
            }
        }
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

/// Undoes what happened between two dumps of the same family: every rule line that `after`
/// has more often than `before` is deleted, and ISTIO chains that `before` lacked are flushed
/// and deleted. What existed before is left alone, unless `remove_all`: then everything Istio
/// that remains goes too (the family must end with none of Istio's rules rather than a mix of
/// an old and a new configuration).
pub(crate) fn undo(before: &State, after: &State, remove_all: bool, plan: &[TokenRule]) -> Batch {
    let mut batch = Batch::default();
    let mut remaining = State::default();
    for (table, chains) in &after.tables {
        let had = before.tables.get(table);
        let new_chains: Vec<&String> = chains.keys().filter(|c| is_istio(c) && had.is_none_or_missing(c)).collect();
        let mut lines = Vec::new();
        let kept = remaining.tables.entry(table.clone()).or_default();
        for (chain, rules) in chains.iter().filter(|(c, _)| !new_chains.contains(c)) {
            let mut old: Vec<&String> = had.and_then(|h| h.get(chain)).map(|r| r.iter().collect()).unwrap_or_default();
            let kept = kept.entry(chain.clone()).or_default();
            for rule in rules {
                match old.iter().position(|o| *o == rule) {
                    Some(at) => {
                        old.remove(at);
                        kept.push(rule.clone());
                    }
                    None => lines.extend(rule.strip_prefix("-A ").map(|rest| format!("-D {rest}"))),
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

trait MissingChain {
    fn is_none_or_missing(&self, chain: &str) -> bool;
}

impl MissingChain for Option<&BTreeMap<String, Vec<String>>> {
    fn is_none_or_missing(&self, chain: &str) -> bool {
        !self.is_some_and(|chains| chains.contains_key(chain))
    }
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

    #[test]
    fn removal_takes_everything_istio_and_nothing_else() {
        let state = State::parse(TPROXY_THEN_FOREIGN);
        let text = compose(Steps { remove: Some(&state), ..Steps::default() }, &[]).render();
        assert_eq!(
            text,
            "* mangle
-D OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-D OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-D OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-D PREROUTING -i eth9 -j RETURN
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
    fn interface_exclusions_before_istio_rules_are_removed() {
        let state = State::parse(
            "*nat\n-A PREROUTING -i eth8 -j RETURN\n-A PREROUTING -i eth6 -j RETURN\n-A OUTPUT -o eth9 -j RETURN\n\
             -A OUTPUT -j ISTIO_OUTPUT\n-A PREROUTING -i eth9 -j RETURN\n-A OUTPUT -o eth7 -j RETURN\nCOMMIT\n",
        );
        let text = compose(Steps { remove: Some(&state), ..Steps::default() }, &[]).render();
        // eth9's pair goes (its OUTPUT half precedes ISTIO_OUTPUT); eth6/7/8 are someone else's.
        assert_eq!(
            text,
            "* nat\n-D OUTPUT -o eth9 -j RETURN\n-D OUTPUT -j ISTIO_OUTPUT\n-D PREROUTING -i eth9 -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn planned_built_in_rules_are_removed_when_save_shows_them_verbatim() {
        let state = State::parse(TPROXY_THEN_FOREIGN);
        let plan = [TokenRule {
            table: Table::Mangle,
            chain: "PREROUTING",
            position: Position::Append,
            args: ["-i", "eth9", "-j", "RETURN"].map(String::from).to_vec(),
        }];
        let text = compose(Steps { remove: Some(&state), ..Steps::default() }, &plan).render();
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
    fn undo_removes_only_what_appeared() {
        let before = State::parse("*nat\n:ISTIO_OLD - [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n");
        let after = State::parse(
            "*filter\n-A INPUT -p tcp -j DROP\nCOMMIT\n*nat\n:ISTIO_OLD - [0:0]\n:ISTIO_NEW - [0:0]\n\
             -A OUTPUT -j ACCEPT\n-A OUTPUT -j ACCEPT\n-A OUTPUT -j ISTIO_NEW\n-A ISTIO_NEW -j RETURN\nCOMMIT\n",
        );
        assert_eq!(
            undo(&before, &after, false, &[]).render(),
            "* filter\n-D INPUT -p tcp -j DROP\nCOMMIT\n\
             * nat\n-D OUTPUT -j ACCEPT\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\nCOMMIT\n"
        );
        assert!(undo(&after, &after, false, &[]).is_empty());
        // Removing all also takes what was Istio's before the run (but nothing foreign).
        assert_eq!(
            undo(&before, &after, true, &[]).render(),
            "* filter\n-D INPUT -p tcp -j DROP\nCOMMIT\n\
             * nat\n-D OUTPUT -j ACCEPT\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\n-F ISTIO_OLD\n-X ISTIO_OLD\nCOMMIT\n"
        );
    }
}
