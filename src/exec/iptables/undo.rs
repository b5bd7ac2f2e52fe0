//! Taking back what a failed run wrote, and only that (`README` "What a run does": no
//! half-captured pod, and a rollback touches only what this run wrote).

use std::collections::BTreeMap;

use crate::chains::{self, is_istio};
use crate::plan::Table;
use crate::render::iptables::TokenRule;
use crate::render::restore::{Op, RestoreInput};

use super::compose::{delete_op, removal};
use super::guardrail;
use super::recognise::recognised;
use super::state::State;

/// What one restore input of ours adds, per table: the chains it declares, and how many rules
/// it appends or inserts per chain. The guardrail is not counted: it is torn down whoever
/// armed it.
#[derive(Debug, Default)]
struct Written {
    declared: Vec<String>,
    rules: BTreeMap<String, usize>,
}

fn written(input: &RestoreInput) -> BTreeMap<Table, Written> {
    let mut tables: BTreeMap<Table, Written> = BTreeMap::new();
    for (table, ops) in input.blocks() {
        let entry = tables.entry(table).or_default();
        for op in ops.iter().filter(|op| !guardrail::is_guardrail_op(op)) {
            match op {
                Op::NewChain(chain) => entry.declared.push(chain.clone()),
                Op::Add { chain, .. } => *entry.rules.entry(chain.clone()).or_default() += 1,
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
/// are Istio's, so a rule someone else added meanwhile stays. What existed before is left
/// alone, unless `remove_all`: then everything Istio that remains goes too (the family must end
/// with none of Istio's rules rather than a mix of an old and a new configuration). A guardrail
/// in `after` (`before` holds none: it is split off) is always torn down, first: no run ends
/// with one armed.
pub(crate) fn undo(
    before: &State,
    after: &State,
    input: &RestoreInput,
    remove_all: bool,
    plan: &[TokenRule],
) -> RestoreInput {
    let written = written(input);
    let (after, leftover) = guardrail::split(after.clone());
    let mut undo = RestoreInput::default();
    undo.push_block(Table::Filter, guardrail::teardown(&leftover));
    let mut remaining = State::default();
    for (table, chains) in &after.tables {
        let had = before.tables.get(table);
        let ours = written.get(table);
        let declared = |chain: &String| ours.is_some_and(|w| w.declared.contains(chain));
        let new_chains: Vec<&String> =
            chains.keys().filter(|c| is_istio(c) && !has_chain(had, c) && declared(c)).collect();
        let istio_rules = recognised(*table, chains, plan);
        let mut ops = Vec::new();
        let kept = remaining.tables.entry(*table).or_default();
        for (chain, rules) in chains.iter().filter(|(c, _)| !new_chains.contains(c)) {
            let mut old: Vec<&String> = had.and_then(|h| h.get(chain)).map(|r| r.iter().collect()).unwrap_or_default();
            let mut budget = ours.and_then(|w| w.rules.get(chain)).copied().unwrap_or(0);
            let kept = kept.entry(chain.clone()).or_default();
            for rule in rules {
                let ours = !chains::is_built_in(chain) || istio_rules.contains(&(chain.as_str(), rule.as_str()));
                match old.iter().position(|o| *o == rule) {
                    Some(at) => {
                        old.remove(at);
                        kept.push(rule.clone());
                    }
                    None if ours && budget > 0 => {
                        budget -= 1;
                        ops.extend(delete_op(rule));
                    }
                    None => kept.push(rule.clone()),
                }
            }
        }
        ops.extend(new_chains.iter().map(|c| Op::Flush(c.to_string())));
        ops.extend(new_chains.iter().map(|c| Op::DeleteChain(c.to_string())));
        undo.table(*table).extend(ops);
    }
    if remove_all {
        for (table, ops) in removal(&remaining, plan) {
            undo.table(table).extend(ops);
        }
    }
    undo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Position;

    #[test]
    fn undo_removes_only_what_this_run_wrote() {
        let before = State::parse("*nat\n:ISTIO_OLD - [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n");
        let after = State::parse(&format!(
            "*filter\n-A INPUT -p tcp -j DROP\n-A INPUT -p tcp -m tcp --dport 9 -j DROP\nCOMMIT\n{}\
             *nat\n:ISTIO_OLD - [0:0]\n:ISTIO_NEW - [0:0]\n:ISTIO_OTHER - [0:0]\n\
             -A OUTPUT -j ACCEPT\n-A OUTPUT -j ACCEPT\n-A OUTPUT -j ISTIO_NEW\n-A ISTIO_NEW -j RETURN\nCOMMIT\n",
            guardrail::tests::armed_as_saved()
        ));
        let add = |chain: &str, position, spec: &str| Op::Add { chain: chain.into(), position, spec: spec.into() };
        let mut input = RestoreInput::default();
        input.table(Table::Filter).extend(guardrail::arm());
        input.table(Table::Nat).extend([
            Op::NewChain("ISTIO_NEW".into()),
            add("ISTIO_NEW", Position::Append, "-j RETURN"),
            add("OUTPUT", Position::Append, "-j ISTIO_NEW"),
        ]);
        // The second ACCEPT, the two DROPs (a pod's default-deny looks like upstream's guardrail)
        // and ISTIO_OTHER appeared meanwhile, not from this run; the guardrail goes.
        let teardown =
            "* filter\n-D FORWARD -j ISTIO_GUARDRAIL\n-D INPUT -j ISTIO_GUARDRAIL\n-D OUTPUT -j ISTIO_GUARDRAIL\n\
                        -F ISTIO_GUARDRAIL\n-X ISTIO_GUARDRAIL\nCOMMIT\n";
        assert_eq!(
            undo(&before, &after, &input, false, &[]).render(),
            format!("{teardown}* nat\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\nCOMMIT\n")
        );
        let (without_guardrail, _) = guardrail::split(after.clone());
        assert!(undo(&without_guardrail, &without_guardrail, &input, false, &[]).is_empty());
        // Removing all also takes what was Istio's before the run (but nothing foreign).
        assert_eq!(
            undo(&before, &after, &input, true, &[]).render(),
            format!(
                "{teardown}* nat\n-D OUTPUT -j ISTIO_NEW\n-F ISTIO_NEW\n-X ISTIO_NEW\n-F ISTIO_OLD\n-F ISTIO_OTHER\n-X ISTIO_OLD\n-X ISTIO_OTHER\nCOMMIT\n"
            )
        );
    }
}
