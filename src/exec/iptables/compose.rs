//! The restore input that changes one family: the guardrail (`guardrail.rs`), removal of
//! everything Istio in the current state, and the planned rules.
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
use crate::plan::Table;
use crate::render::iptables::TokenRule;
use crate::render::restore::{Op, RestoreInput};

use super::guardrail::{self, Leftover};
use super::recognise::recognised;
use super::state::State;

/// `-D CHAIN SPEC` for a raw `-A CHAIN SPEC` line of `-save` output.
pub(super) fn delete_op(line: &str) -> Option<Op> {
    let rest = line.strip_prefix("-A ")?;
    let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Op::Delete { chain: chain.to_string(), spec: spec.to_string() })
}

/// Everything Istio in `current`, as removal ops per table: `-D` for the recognised rules,
/// then `-F` and `-X` for every ISTIO chain (flushing all first, so jumps between ISTIO chains
/// cannot block a delete). `current` holds no guardrail (`guardrail::split`): a leftover one
/// is torn down on its own, before this.
pub(super) fn removal(current: &State, plan: &[TokenRule]) -> Vec<(Table, Vec<Op>)> {
    let mut tables = Vec::new();
    for (table, chains) in &current.tables {
        let mut ops: Vec<Op> =
            recognised(*table, chains, plan).into_iter().filter_map(|(_, rule)| delete_op(rule)).collect();
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
    /// Arm guardrails first and disarm them last.
    pub guard: bool,
    /// A guardrail a killed run left: torn down first in the first filter block (before this
    /// run arms its own, which reuses the name).
    pub leftover: Option<&'a Leftover>,
    /// The plan's restore input.
    pub apply: Option<&'a RestoreInput>,
}

/// One restore input for a family: `[leftover teardown, guardrail] [per table: removal, then
/// new rules] [guardrail removal]`. Removal and new rules of a table share one COMMIT, so the
/// table never shows a half-built state; the first filter block arms (after tearing down a
/// leftover) and may carry filter's removal and rules too, the last one disarms.
pub(crate) fn compose(steps: Steps<'_>, plan: &[TokenRule]) -> RestoreInput {
    let mut input = RestoreInput::default();
    let teardown = steps.leftover.map(guardrail::teardown).unwrap_or_default();
    let mut tables: BTreeMap<Table, Vec<Op>> = BTreeMap::new();
    if steps.guard {
        input.push_block(Table::Filter, teardown.into_iter().chain(guardrail::arm()).collect());
    } else {
        tables.entry(Table::Filter).or_default().extend(teardown);
    }
    if let Some(state) = steps.remove {
        for (table, ops) in removal(state, plan) {
            tables.entry(table).or_default().extend(ops);
        }
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
        input.push_block(Table::Filter, guardrail::disarm());
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Position;
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

    /// The pod's default-deny and a guardrail a killed run left, as `-save` prints them.
    fn pods_drop_and_leftover() -> (State, Leftover) {
        let saved = format!(
            "*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n{}*nat\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n",
            guardrail::tests::armed_as_saved()
        );
        guardrail::split(State::parse(&saved))
    }

    #[test]
    fn reconcile_guards_removes_and_applies_in_one_input() {
        // The pod's own default-deny looks like an upstream guardrail: it stays. The guardrail a
        // killed run left is torn down before this run arms its own, in the same block.
        let (state, leftover) = pods_drop_and_leftover();
        let apply = restore_input(&[rule(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT")]);
        let steps = Steps { remove: Some(&state), guard: true, leftover: Some(&leftover), apply: Some(&apply) };
        assert_eq!(
            compose(steps, &[]).render(),
            "* filter
-D FORWARD -j ISTIO_GUARDRAIL
-D INPUT -j ISTIO_GUARDRAIL
-D OUTPUT -j ISTIO_GUARDRAIL
-F ISTIO_GUARDRAIL
-X ISTIO_GUARDRAIL
-N ISTIO_GUARDRAIL
-A ISTIO_GUARDRAIL -p tcp -j DROP
-A ISTIO_GUARDRAIL -p udp -j DROP
-I INPUT 1 -j ISTIO_GUARDRAIL
-I FORWARD 1 -j ISTIO_GUARDRAIL
-I OUTPUT 1 -j ISTIO_GUARDRAIL
COMMIT
* nat
-F ISTIO_OUTPUT
-X ISTIO_OUTPUT
-N ISTIO_OUTPUT
-A OUTPUT -j ISTIO_OUTPUT
COMMIT
* filter
-D INPUT -j ISTIO_GUARDRAIL
-D FORWARD -j ISTIO_GUARDRAIL
-D OUTPUT -j ISTIO_GUARDRAIL
-F ISTIO_GUARDRAIL
-X ISTIO_GUARDRAIL
COMMIT
"
        );
    }

    #[test]
    fn a_leftover_guardrail_is_torn_down_and_the_pods_drops_kept() {
        let (state, leftover) = pods_drop_and_leftover();
        let teardown =
            "* filter\n-D FORWARD -j ISTIO_GUARDRAIL\n-D INPUT -j ISTIO_GUARDRAIL\n-D OUTPUT -j ISTIO_GUARDRAIL\n\
                        -F ISTIO_GUARDRAIL\n-X ISTIO_GUARDRAIL\nCOMMIT\n";
        // A plain rerun: the teardown only.
        assert_eq!(compose(Steps { leftover: Some(&leftover), ..Steps::default() }, &[]).render(), teardown);
        // A cleanup: the teardown first, then Istio's chains; nothing else in filter.
        let cleanup = Steps { remove: Some(&state), leftover: Some(&leftover), ..Steps::default() };
        assert_eq!(
            compose(cleanup, &[]).render(),
            format!("{teardown}* nat\n-F ISTIO_OUTPUT\n-X ISTIO_OUTPUT\nCOMMIT\n")
        );
        // The state without the guardrail is only the pod's rule and Istio's chain.
        assert_eq!(state_text(&state), "*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n");
    }

    #[test]
    fn nothing_to_do_is_an_empty_input() {
        assert!(compose(Steps::default(), &[]).is_empty());
        assert_eq!(compose(Steps::default(), &[]).render(), "");
    }
}
