//! The restore input that changes one family: guardrails, removal of everything Istio in the
//! current state, and the planned rules.
//!
//! Upstream removes only what the *current* configuration would create (`apply.md` §3.7), one
//! `iptables -D/-F/-X` process per line with errors ignored, so chains left by a different
//! earlier configuration (TPROXY's mangle chains when the pod is now REDIRECT) stay forever.
//! Here removal is computed from the `-save` state instead: every ISTIO chain and every jump
//! into one, plus the rules in built-in chains that are provably Istio's (`recognise`).
//! Because every op names something that exists, the whole removal is one restore input that
//! cannot fail half-way, and it can share a table's COMMIT with the new rules (atomic per
//! table).

use std::collections::BTreeMap;

use crate::chains::is_istio;
use crate::plan::{Position, Table};
use crate::render::iptables::TokenRule;
use crate::render::restore::{Op, RestoreInput};

use super::recognise::recognised;
use super::state::State;

/// The DROP rules that keep traffic out while chains are rebuilt (`apply.md` §3.8), in
/// upstream's order. Inserted at position 1 each, so the last is on top.
pub(super) const GUARDRAILS: [(&str, &str); 6] =
    [("INPUT", "tcp"), ("INPUT", "udp"), ("FORWARD", "tcp"), ("FORWARD", "udp"), ("OUTPUT", "tcp"), ("OUTPUT", "udp")];

/// The comment that marks a guardrail as this tool's. Upstream's guardrails are a bare
/// `-p tcp -j DROP`, which a pod's own default-deny looks exactly like; with the mark a
/// guardrail left by a killed run is always found and never confused with the pod's rules.
/// No space in it, so `-save` prints it unquoted on legacy and nft alike.
pub(crate) const GUARDRAIL_COMMENT: &str = "istio-iptables-guardrail";

/// How guardrails are written: marked with [`GUARDRAIL_COMMENT`], or bare where the kernel
/// has no `comment` match (gVisor). Bare guardrails cannot be told from a pod's own DROP
/// rules, so only the run that inserted them removes them (its final block, or its rollback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Marking {
    #[default]
    Marked,
    Bare,
}

/// A guardrail's rule spec: `-p PROTO [-m comment --comment MARK] -j DROP`.
pub(super) fn guardrail_spec(proto: &str, marking: Marking) -> String {
    match marking {
        Marking::Marked => format!("-p {proto} -m comment --comment {GUARDRAIL_COMMENT} -j DROP"),
        Marking::Bare => format!("-p {proto} -j DROP"),
    }
}

/// Whether a raw `-A` line of the filter table is a marked guardrail (ours, whoever wrote it).
pub(crate) fn is_marked_guardrail(line: &str) -> bool {
    let tokens: Vec<&str> = line.split(' ').collect();
    let marked = tokens
        .windows(2)
        .any(|w| w[0] == "--comment" && w[1].trim_matches(|c| c == '"' || c == '\'') == GUARDRAIL_COMMENT);
    marked && tokens.ends_with(&["-j", "DROP"]) && GUARDRAILS.iter().any(|(chain, _)| tokens.get(1) == Some(chain))
}

/// The marked guardrails in `state` (left by a run that was killed before disarming them).
pub(crate) fn leftover_guardrails(state: &State) -> Vec<&String> {
    state.rules(Table::Filter).filter(|line| is_marked_guardrail(line)).collect()
}

/// `-D CHAIN SPEC` for a raw `-A CHAIN SPEC` line of `-save` output.
pub(super) fn delete_op(line: &str) -> Option<Op> {
    let rest = line.strip_prefix("-A ")?;
    let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Op::Delete { chain: chain.to_string(), spec: spec.to_string() })
}

/// Everything Istio in `current`, as removal ops per table: `-D` for the recognised rules and
/// leftover marked guardrails, then `-F` and `-X` for every ISTIO chain (flushing all first,
/// so jumps between ISTIO chains cannot block a delete).
pub(super) fn removal(current: &State, plan: &[TokenRule]) -> Vec<(Table, Vec<Op>)> {
    let mut tables = Vec::new();
    for (table, chains) in &current.tables {
        let mut ops: Vec<Op> =
            recognised(*table, chains, plan).into_iter().filter_map(|(_, rule)| delete_op(rule)).collect();
        if *table == Table::Filter {
            ops.extend(leftover_guardrails(current).into_iter().filter_map(|line| delete_op(line)));
        }
        let istio: Vec<&String> = chains.keys().filter(|chain| is_istio(chain)).collect();
        ops.extend(istio.iter().map(|chain| Op::Flush(chain.to_string())));
        ops.extend(istio.iter().map(|chain| Op::DeleteChain(chain.to_string())));
        if !ops.is_empty() {
            tables.push((*table, ops));
        }
    }
    tables
}

/// What one family's run feeds to `-restore`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Steps<'a> {
    /// Remove everything Istio found in this state.
    pub remove: Option<&'a State>,
    /// Arm guardrails first and disarm them last (leftovers of a killed run go with `remove`).
    pub guard: bool,
    /// How the guardrails are written.
    pub marking: Marking,
    /// Without `remove`: delete the leftover marked guardrails found in this state.
    pub disarm: Option<&'a State>,
    /// The plan's restore input.
    pub apply: Option<&'a RestoreInput>,
}

/// One restore input for a family: `[guardrails] [per table: removal, then new rules]
/// [guardrail removal]`. Removal and new rules of a table share one COMMIT, so the table never
/// shows a half-built state.
pub(crate) fn compose(steps: Steps<'_>, plan: &[TokenRule]) -> RestoreInput {
    let mut input = RestoreInput::default();
    if steps.guard {
        let ops = GUARDRAILS.iter().map(|(chain, proto)| Op::Add {
            chain: chain.to_string(),
            position: Position::Insert(1),
            spec: guardrail_spec(proto, steps.marking),
        });
        input.push_block(Table::Filter, ops.collect());
    }
    let mut tables: BTreeMap<Table, Vec<Op>> = BTreeMap::new();
    if let Some(state) = steps.remove {
        // Leftover marked guardrails are identical to the ones just armed, so deleting them
        // here leaves exactly six until the last block.
        for (table, ops) in removal(state, plan) {
            tables.entry(table).or_default().extend(ops);
        }
    } else if let Some(state) = steps.disarm {
        let leftovers = leftover_guardrails(state).into_iter().filter_map(|line| delete_op(line));
        tables.entry(Table::Filter).or_default().extend(leftovers);
    }
    if let Some(planned) = steps.apply {
        for (table, ops) in planned.blocks() {
            tables.entry(table).or_default().extend(ops.iter().cloned());
        }
    }
    tables.retain(|_, ops| !ops.is_empty());
    for (table, ops) in tables {
        input.table(table).extend(ops);
    }
    if steps.guard {
        input.push_block(Table::Filter, guardrail_removal(steps.marking));
    }
    input
}

/// Disarms the guardrails (one occurrence of each).
fn guardrail_removal(marking: Marking) -> Vec<Op> {
    GUARDRAILS
        .iter()
        .map(|(chain, proto)| Op::Delete { chain: chain.to_string(), spec: guardrail_spec(proto, marking) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::iptables::restore_input;

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

    fn state_text(state: &State) -> String {
        let lines: Vec<String> = state.rules(Table::Filter).cloned().collect();
        format!("*filter\n{}\nCOMMIT\n", lines.join("\n"))
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
    fn planned_built_in_rules_are_removed_when_save_shows_them_verbatim() {
        let plan = [rule(Table::Mangle, "PREROUTING", "-i eth9 -j RETURN")];
        let text = removal_text(TPROXY_THEN_FOREIGN, &plan);
        assert!(text.contains("-D PREROUTING -i eth9 -j RETURN\n"), "{text}");
        assert!(!text.contains("0x1/0xffffffff"), "foreign rule touched: {text}");
    }

    #[test]
    fn reconcile_guards_removes_and_applies_in_one_input() {
        // The pod's own default-deny looks like an upstream guardrail: it stays. A marked
        // guardrail left by a killed run goes.
        let state = State::parse(
            "*filter\n-A INPUT -p udp -j DROP\n-A OUTPUT -p tcp -m comment --comment istio-iptables-guardrail -j DROP\nCOMMIT\n\
             *nat\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n",
        );
        let apply = restore_input(&[rule(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT")]);
        let steps = Steps { remove: Some(&state), guard: true, apply: Some(&apply), ..Steps::default() };
        let mark = "-m comment --comment istio-iptables-guardrail -j DROP";
        assert_eq!(
            compose(steps, &[]).render(),
            format!(
                "* filter
-I INPUT 1 -p tcp {mark}
-I INPUT 1 -p udp {mark}
-I FORWARD 1 -p tcp {mark}
-I FORWARD 1 -p udp {mark}
-I OUTPUT 1 -p tcp {mark}
-I OUTPUT 1 -p udp {mark}
-D OUTPUT -p tcp {mark}
COMMIT
* nat
-F ISTIO_OUTPUT
-X ISTIO_OUTPUT
-N ISTIO_OUTPUT
-A OUTPUT -j ISTIO_OUTPUT
COMMIT
* filter
-D INPUT -p tcp {mark}
-D INPUT -p udp {mark}
-D FORWARD -p tcp {mark}
-D FORWARD -p udp {mark}
-D OUTPUT -p tcp {mark}
-D OUTPUT -p udp {mark}
COMMIT
"
            )
        );
        let bare = Steps { guard: true, marking: Marking::Bare, ..Steps::default() };
        assert!(compose(bare, &[]).render().starts_with("* filter\n-I INPUT 1 -p tcp -j DROP\n"));
    }

    #[test]
    fn leftover_guardrails_are_disarmed_and_the_pods_drops_kept() {
        let state = State::parse(
            "*filter\n-A INPUT -p tcp -j DROP\n-A INPUT -p tcp -m comment --comment istio-iptables-guardrail -j DROP\n\
             -A FORWARD -p udp -m comment --comment \"istio-iptables-guardrail\" -j DROP\n\
             -A INPUT -p tcp -m comment --comment other -j DROP\nCOMMIT\n",
        );
        assert_eq!(leftover_guardrails(&state).len(), 2);
        let disarm = Steps { disarm: Some(&state), ..Steps::default() };
        assert_eq!(
            compose(disarm, &[]).render(),
            "* filter\n-D FORWARD -p udp -m comment --comment \"istio-iptables-guardrail\" -j DROP\n\
             -D INPUT -p tcp -m comment --comment istio-iptables-guardrail -j DROP\nCOMMIT\n"
        );
        // A cleanup removes them too, and nothing else in filter.
        assert_eq!(removal_text(state_text(&state).as_str(), &[]), compose(disarm, &[]).render());
    }

    #[test]
    fn nothing_to_do_is_an_empty_input() {
        assert!(compose(Steps::default(), &[]).is_empty());
        assert_eq!(compose(Steps::default(), &[]).render(), "");
    }
}
