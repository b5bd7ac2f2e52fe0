//! `istio-iptables check` for the iptables backends: the live Istio rules of each family, read
//! with one `-save`, compared with what this configuration installs. Read-only: the only
//! restore it may run holds `-C` checks, for rules whose `-save` form the plan cannot know.
//!
//! Both sides are in `-save`'s spelling: the expected side is the plan's rules with the spec
//! tokens `-save` prints (`render::save`), laid out per chain as the kernel holds it after the
//! restore (inserts where the kernel puts them), built typed (never rendered and parsed back);
//! the live side is every ISTIO chain and the rules of
//! built-in chains that reconcile's recogniser calls provably Istio's. The pod's own rules and
//! the counters are never part of it.

use std::collections::BTreeMap;

use crate::chains::is_istio;
use crate::error::Result;
use crate::exec::check::{Difference, Drift};
use crate::exec::seam::Netfilter;
use crate::plan::{Family, Plan, Table};
use crate::render::iptables::{check_input, token_rules, TokenRule};
use crate::render::save::{saved_rules, Dump};

use super::commands::family_label;
use super::state::State;
use super::{detect, recognise, Settings};

/// The differences of every family the configuration plans, plus Istio rules left in IPv6
/// while it is off (what a reconcile would remove).
pub(crate) fn drift(settings: Settings, plan: &Plan, runner: &dyn Netfilter) -> Result<Vec<Drift>> {
    let mut found = Vec::new();
    for family in [Family::V4, Family::V6] {
        let planned = family == Family::V4 || settings.enable_ipv6;
        let detected = match detect::detect(family, settings.forced_backend, runner) {
            Ok(detected) => detected,
            Err(e) if !planned => {
                tracing::debug!("not looking for IPv6 leftovers: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let live = State::parse(&detected.saved);
        let rules = if planned { token_rules(plan, family) } else { Vec::new() };
        let forms = if planned { saved_rules(plan, family) } else { Vec::new() };
        // The plan with each rule in `-save`'s spelling where it is known.
        let printed: Vec<TokenRule> = rules
            .iter()
            .zip(&forms)
            .map(|(rule, form)| match &form.spec {
                Some(spec) => TokenRule { args: spec.clone(), ..rule.clone() },
                None => rule.clone(),
            })
            .collect();
        let unknown: Vec<TokenRule> =
            rules.iter().zip(&forms).filter(|(_, form)| form.spec.is_none()).map(|(rule, _)| rule.clone()).collect();
        // Typed all the way: the kernel's layout after a restore, never text read back.
        let expected = State::of(&Dump::after_restore(&printed).restore_input());
        let where_ = format!("{} ({})", family_label(family), detected.tool.program);
        let mut differences = compare(&expected, &istio_part(&live, &printed));
        if !unknown.is_empty() {
            // iptables itself vouches for the rules whose printed form is unknown (owner names).
            let present = runner.restore(&detected.tool, &check_input(&unknown).render()).is_ok();
            if present {
                differences = settle_unknown(differences, &unknown);
            }
        }
        found.extend(differences.into_iter().map(|(table, chain, difference)| Drift {
            family: where_.clone(),
            table: table.iptables_name().to_string(),
            chain,
            difference,
        }));
    }
    Ok(found)
}

/// The Istio part of `live`: every ISTIO chain and the recognised rules of the others. A
/// guardrail a killed run left is part of it (its chain is `ISTIO_GUARDRAIL`, and a jump into
/// it is recognised like any jump into an ISTIO chain): the plan has none, so it shows as an
/// extra chain and extra jumps, which is drift.
fn istio_part(live: &State, plan: &[TokenRule]) -> State {
    let mut part = State::default();
    for (table, chains) in &live.tables {
        let held = part.tables.entry(*table).or_default();
        for (chain, lines) in chains.iter().filter(|(chain, _)| is_istio(chain)) {
            held.insert(chain.clone(), lines.clone());
        }
        for (chain, line) in recognise::recognised(*table, chains, plan) {
            held.entry(chain.to_string()).or_default().push(line.to_string());
        }
        held.retain(|chain, lines| is_istio(chain) || !lines.is_empty());
    }
    part
}

type Found = Vec<(Table, String, Difference)>;

/// Chain by chain: chains missing or extra, then lines missing, extra or changed (a missing
/// and an extra line of one chain, paired in order), then the order of a chain whose lines all
/// match.
fn compare(expected: &State, live: &State) -> Found {
    let mut found = Found::new();
    let empty = BTreeMap::new();
    for table in expected.tables.keys().chain(live.tables.keys()).copied().collect::<std::collections::BTreeSet<_>>() {
        let want = expected.tables.get(&table).unwrap_or(&empty);
        let have = live.tables.get(&table).unwrap_or(&empty);
        let names: std::collections::BTreeSet<&String> = want.keys().chain(have.keys()).collect();
        for chain in names {
            let (want_lines, have_lines) = (want.get(chain), have.get(chain));
            let mut note = |difference| found.push((table, chain.clone(), difference));
            if is_istio(chain) {
                match (want_lines, have_lines) {
                    (Some(_), None) => note(Difference::MissingChain),
                    (None, Some(_)) => note(Difference::ExtraChain),
                    _ => {}
                }
            }
            let want_lines = want_lines.map(Vec::as_slice).unwrap_or_default();
            let have_lines = have_lines.map(Vec::as_slice).unwrap_or_default();
            let missing = without(want_lines, have_lines);
            let extra = without(have_lines, want_lines);
            let paired = missing.len().min(extra.len());
            for (from, to) in extra.iter().zip(&missing).take(paired) {
                note(Difference::Changed { live: from.clone(), expected: to.clone() });
            }
            missing.iter().skip(paired).for_each(|line| note(Difference::Missing(line.clone())));
            extra.iter().skip(paired).for_each(|line| note(Difference::Extra(line.clone())));
            if missing.is_empty() && extra.is_empty() && want_lines != have_lines {
                note(Difference::Order);
            }
        }
    }
    found
}

/// The lines of `from` that `other` does not have, counting repeats.
fn without(from: &[String], other: &[String]) -> Vec<String> {
    let mut left: Vec<&String> = other.iter().collect();
    from.iter()
        .filter(|line| match left.iter().position(|o| o == line) {
            Some(at) => {
                left.remove(at);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

/// After iptables found every rule of `unknown` present: each such rule's line (in the
/// restore's spelling) stands for one live line of its chain that the comparison could not place.
fn settle_unknown(found: Found, unknown: &[TokenRule]) -> Found {
    let mut settled: Found = Vec::new();
    let mut pending: Vec<(Table, String)> =
        unknown.iter().map(|rule| (rule.table, format!("-A {} {}", rule.chain, rule.spec()))).collect();
    for (table, chain, difference) in found {
        let line = match &difference {
            Difference::Changed { expected, .. } | Difference::Missing(expected) => Some(expected),
            _ => None,
        };
        match line.and_then(|line| pending.iter().position(|(t, l)| *t == table && l == line)) {
            Some(at) => {
                pending.remove(at);
            }
            None => settled.push((table, chain, difference)),
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeNetfilter;
    use crate::exec::iptables::flow_tests::{installed_as_saved, plan};

    const SETTINGS: Settings = Settings {
        enable_ipv6: false,
        reconcile: false,
        cleanup_only: false,
        force_apply: false,
        forced_backend: None,
    };

    fn drift_over(saved: &str, plan: &Plan) -> Vec<Drift> {
        let fake = FakeNetfilter::default();
        fake.script_saves(Family::V4, &[saved]);
        drift(SETTINGS, plan, &fake).unwrap()
    }

    fn kinds(found: &[Drift]) -> Vec<(String, &Difference)> {
        found.iter().map(|d| (format!("{} {}", d.table, d.chain), &d.difference)).collect()
    }

    #[test]
    fn the_typed_expected_state_is_the_dump_the_kernel_stand_in_prints() {
        let plan = plan(&["-m", "TPROXY"], false);
        let dump = Dump::after_restore(&token_rules(&plan, Family::V4));
        let typed = State::of(&dump.restore_input());
        assert!(typed.tables.values().any(|chains| chains.contains_key("ISTIO_TPROXY")), "{typed:?}");
        assert_eq!(typed, State::parse(&dump.render()));
    }

    #[test]
    fn the_applied_configuration_matches_and_the_pods_own_rules_do_not_count() {
        let plan = plan(&[], false);
        let saved = installed_as_saved(&plan, Family::V4);
        assert_eq!(kinds(&drift_over(&saved, &plan)), vec![]);
        let with_pod_rule = format!("{saved}*filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n");
        assert_eq!(kinds(&drift_over(&with_pod_rule, &plan)), vec![]);
    }

    #[test]
    fn a_leftover_guardrail_is_drift_and_the_pods_own_drop_is_not() {
        let plan = plan(&[], false);
        let saved = installed_as_saved(&plan, Family::V4);
        let guardrail = super::super::guardrail::tests::armed_as_saved();
        let state = format!("{saved}*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n{guardrail}");
        let extra = |line: &str| Difference::Extra(line.to_string());
        let expected = [
            ("filter FORWARD", extra("-A FORWARD -j ISTIO_GUARDRAIL")),
            ("filter INPUT", extra("-A INPUT -j ISTIO_GUARDRAIL")),
            ("filter ISTIO_GUARDRAIL", Difference::ExtraChain),
            ("filter ISTIO_GUARDRAIL", extra("-A ISTIO_GUARDRAIL -p tcp -j DROP")),
            ("filter ISTIO_GUARDRAIL", extra("-A ISTIO_GUARDRAIL -p udp -j DROP")),
            ("filter OUTPUT", extra("-A OUTPUT -j ISTIO_GUARDRAIL")),
        ];
        let expected: Vec<(String, &Difference)> = expected.iter().map(|(at, d)| (at.to_string(), d)).collect();
        assert_eq!(kinds(&drift_over(&state, &plan)), expected);
        // A chain declared, nothing else (no kill leaves it, but nothing about it is assumed).
        let declared = format!("{saved}*filter\n:ISTIO_GUARDRAIL - [0:0]\nCOMMIT\n");
        assert_eq!(
            kinds(&drift_over(&declared, &plan)),
            vec![("filter ISTIO_GUARDRAIL".to_string(), &Difference::ExtraChain)]
        );
    }

    #[test]
    fn a_deleted_rule_is_missing_and_an_added_one_extra() {
        let plan = plan(&[], false);
        let saved = installed_as_saved(&plan, Family::V4);
        let deleted = "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n";
        assert!(saved.contains(deleted), "{saved}");
        let found = drift_over(&saved.replacen(deleted, "", 1), &plan);
        assert_eq!(
            kinds(&found),
            vec![("nat ISTIO_OUTPUT".into(), &Difference::Missing(deleted.trim_end().to_string()))]
        );
        let added = saved.replacen(deleted, &format!("{deleted}-A ISTIO_OUTPUT -d 10.9.0.0/16 -j RETURN\n"), 1);
        let found = drift_over(&added, &plan);
        assert_eq!(
            kinds(&found),
            vec![("nat ISTIO_OUTPUT".into(), &Difference::Extra("-A ISTIO_OUTPUT -d 10.9.0.0/16 -j RETURN".into()))]
        );
    }

    #[test]
    fn a_changed_rule_an_extra_chain_and_a_missing_everything() {
        let plan = plan(&[], false);
        let saved = installed_as_saved(&plan, Family::V4);
        let changed = saved.replacen("--to-ports 15001", "--to-ports 15002", 1);
        let found = drift_over(&changed, &plan);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(matches!(&found[0].difference, Difference::Changed { live, expected }
            if live.ends_with("15002") && expected.ends_with("15001")));
        let extra_chain = format!("{saved}*mangle\n:ISTIO_TPROXY - [0:0]\nCOMMIT\n");
        assert_eq!(
            kinds(&drift_over(&extra_chain, &plan)),
            vec![("mangle ISTIO_TPROXY".into(), &Difference::ExtraChain)]
        );
        let nothing = drift_over("", &plan);
        assert!(nothing.iter().any(|d| d.difference == Difference::MissingChain), "{nothing:?}");
        assert!(nothing.iter().any(|d| matches!(d.difference, Difference::Missing(_))), "{nothing:?}");
    }

    #[test]
    fn reordered_rules_are_reported() {
        let plan = plan(&[], false);
        let saved = installed_as_saved(&plan, Family::V4);
        let first = "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n";
        let moved = format!("{}*nat\n{first}COMMIT\n", saved.replacen(first, "", 1));
        assert_eq!(kinds(&drift_over(&moved, &plan)), vec![("nat ISTIO_OUTPUT".into(), &Difference::Order)]);
    }

    #[test]
    fn rules_whose_form_is_unknown_are_checked_by_iptables() {
        let plan = plan(&["-u", "istio-proxy-user"], false);
        let fake = FakeNetfilter::default();
        // The kernel prints the resolved uid; the plan cannot know it.
        let saved = installed_as_saved(&plan, Family::V4).replace("istio-proxy-user", "1234");
        fake.script_saves(Family::V4, &[&saved]);
        let found = drift(SETTINGS, &plan, &fake).unwrap();
        assert_eq!(kinds(&found), vec![], "the -C restore passed");
        assert!(fake
            .calls()
            .iter()
            .any(|c| matches!(c, crate::exec::fake::Call::Restore { input, .. } if input.contains("-C "))));
        let fake = FakeNetfilter::default();
        fake.script_saves(Family::V4, &[&saved]);
        fake.fail_restore(Family::V4, 0, "iptables-restore: line 2 failed");
        assert!(!drift(SETTINGS, &plan, &fake).unwrap().is_empty());
    }
}
