//! What a plain rerun does with the state a killed run left: leftover guardrails, and a first
//! apply of this same configuration that committed only some of its tables.
//!
//! `iptables-restore` commits each table atomically, so a run killed mid-restore leaves a
//! prefix of its input's table blocks applied. Upstream's decision table (`executeCommands`)
//! sees such a state as residue plus delta and, without `--reconcile`, applies the whole plan
//! again, which the kernel refuses ("Chain already exists") on every rerun: the pod never
//! converges. Here a plain rerun recognises the prefix of its own configuration and applies
//! only the tables that are missing. Nothing is removed, so no guardrails are needed.

use crate::chains::is_istio;
use crate::plan::Table;
use crate::render::iptables::{check_input, restore_input, TokenRule};
use crate::render::restore::RestoreInput;

use super::state::{compare, Comparison, State};

/// How one family's state relates to an interrupted apply of `rules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resumption {
    /// The plan's blocks for the tables that hold nothing of Istio's yet.
    pub missing: RestoreInput,
    /// The tables already there.
    pub present: Vec<Table>,
    /// `-C` checks for the rules of the tables already there (their chains and counts match).
    pub present_checks: RestoreInput,
}

/// `Some` when every table of `current` that holds an ISTIO chain is one the plan fills, with
/// the plan's chains and rule counts (what this configuration's own restore would have
/// committed), and no other table holds one. `None` means another configuration's rules are
/// there: upstream's decision applies.
pub(super) fn resumption(current: &State, planned: &State, rules: &[TokenRule]) -> Option<Resumption> {
    let mut present: Vec<Table> = Vec::new();
    for (table, chains) in &current.tables {
        if !chains.keys().any(|chain| is_istio(chain)) {
            continue;
        }
        let planned_table = planned.tables.get(table)?;
        let only = |chains: &std::collections::BTreeMap<String, Vec<String>>| State {
            tables: [(*table, chains.clone())].into_iter().collect(),
        };
        if compare(&only(planned_table), &only(chains)) != Comparison::NeedsRuleCheck {
            return None;
        }
        present.push(*table);
    }
    let (present_rules, missing_rules): (Vec<TokenRule>, Vec<TokenRule>) =
        rules.iter().cloned().partition(|rule| present.contains(&rule.table));
    Some(Resumption { missing: restore_input(&missing_rules), present_checks: check_input(&present_rules), present })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Position;

    fn rule(table: Table, chain: &'static str, args: &str) -> TokenRule {
        TokenRule { table, chain, position: Position::Append, args: args.split(' ').map(String::from).collect() }
    }

    #[test]
    fn a_committed_prefix_resumes_with_the_missing_tables_only() {
        let rules = [
            rule(Table::Mangle, "PREROUTING", "-p tcp -j ISTIO_INBOUND"),
            rule(Table::Mangle, "ISTIO_INBOUND", "-p tcp -j RETURN"),
            rule(Table::Nat, "OUTPUT", "-p tcp -j ISTIO_OUTPUT"),
        ];
        let planned = State::of(&restore_input(&rules));
        let mangle_done = State::parse(
            "*mangle\n:ISTIO_INBOUND - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A ISTIO_INBOUND -p tcp -j RETURN\nCOMMIT\n",
        );
        let resumed = resumption(&mangle_done, &planned, &rules).expect("a prefix of this configuration");
        assert_eq!(resumed.missing.render(), "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -p tcp -j ISTIO_OUTPUT\nCOMMIT\n");
        assert!(resumed.present_checks.render().contains("-C ISTIO_INBOUND -p tcp -j RETURN"));
        // Another configuration's chain, or a count that differs, is not this run's prefix.
        let other = State::parse("*mangle\n:ISTIO_DIVERT - [0:0]\nCOMMIT\n");
        assert_eq!(resumption(&other, &planned, &rules), None);
        let more = State::parse(
            "*mangle\n:ISTIO_INBOUND - [0:0]\n-A ISTIO_INBOUND -j RETURN\n-A ISTIO_INBOUND -j RETURN\nCOMMIT\n",
        );
        assert_eq!(resumption(&more, &planned, &rules), None);
    }
}
