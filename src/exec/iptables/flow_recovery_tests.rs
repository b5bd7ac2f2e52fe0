//! The iptables flow over the recording fake, its recovery: each rollback path, guardrails
//! (armed, refused, left by a killed run) and the intermediate states a killed run leaves. The
//! decisions themselves are in `flow_tests.rs`, whose helpers these tests share.

use super::apply;
use super::flow_tests::{
    installed, installed_as_saved, is_check, other_config, plan, restores, run_over, CLEANUP_ONLY, DEFAULT, RECONCILE,
};
use super::guardrail::tests::armed_as_saved;
use super::Settings;
use crate::exec::fake::{installed_state, FakeNetfilter};
use crate::plan::Family;
use crate::render::iptables::{restore_input, token_rules};

// ---- Rollback. ----

#[test]
fn ipv6_failure_after_ipv4_succeeded_removes_the_ipv4_rules() {
    let plan = plan(&[], true);
    let settings = Settings { enable_ipv6: true, ..DEFAULT };
    let fake = FakeNetfilter::default();
    // IPv4: empty at the start, then holding what the restore wrote.
    fake.script_saves(Family::V4, &["", &installed(&plan, Family::V4)]);
    fake.script_saves(Family::V6, &[""]);
    fake.fail_restore(Family::V6, 0, "ip6tables-restore: line 5 failed");
    let err = apply(settings, &plan, &fake).unwrap_err();
    assert!(err.to_string().starts_with("ip6tables restore of the IPv6 rules failed: "), "{err}");
    let v4 = restores(&fake, Family::V4);
    assert_eq!(v4.len(), 2, "apply, then undo: {v4:?}");
    for line in ["-D OUTPUT -j ISTIO_OUTPUT", "-X ISTIO_OUTPUT", "-X ISTIO_INBOUND", "-X ISTIO_REDIRECT"] {
        assert!(v4[1].lines().any(|l| l == line), "{line} missing from the undo:\n{}", v4[1]);
    }
    // IPv6 committed nothing (its state still reads empty), so it has nothing to undo.
    assert_eq!(restores(&fake, Family::V6).len(), 1);
}

#[test]
fn rollback_keeps_what_another_party_added_meanwhile() {
    let plan = plan(&[], true);
    let settings = Settings { enable_ipv6: true, ..DEFAULT };
    let fake = FakeNetfilter::default();
    let mut after = installed(&plan, Family::V4);
    after.push_str(
        "*nat\n:POD_CHAIN - [0:0]\n-A OUTPUT -p tcp -m tcp --dport 9 -j ACCEPT\n-A POD_CHAIN -j RETURN\nCOMMIT\n",
    );
    fake.script_saves(Family::V4, &["", &after]);
    fake.fail_restore(Family::V6, 0, "ip6tables-restore: line 5 failed");
    apply(settings, &plan, &fake).unwrap_err();
    let undo = &restores(&fake, Family::V4)[1];
    assert!(undo.contains("-X ISTIO_OUTPUT"), "{undo}");
    assert!(!undo.contains("--dport 9") && !undo.contains("POD_CHAIN"), "a foreign rule was undone:\n{undo}");
}

#[test]
fn failure_during_reconcile_disarms_guardrails_and_leaves_no_istio_rules() {
    let plan = plan(&[], false);
    let before = installed(&other_config(), Family::V4);
    // The filter commit (guardrails) went through; the rest did not.
    let after = format!("{before}{}", armed_as_saved());
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&before, &after]);
    fake.fail_restore(Family::V4, 0, "iptables-restore: line 30 failed");
    apply(RECONCILE, &plan, &fake).unwrap_err();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    let undo = &inputs[1];
    assert!(undo.starts_with(TEARDOWN), "the guardrail goes first:\n{undo}");
    for line in ["-X ISTIO_TPROXY", "-X ISTIO_OUTPUT"] {
        assert!(undo.lines().any(|l| l == line), "{line} missing from the undo:\n{undo}");
    }
    assert!(!undo.contains("-N "), "{undo}");
}

#[test]
fn failed_removal_of_ipv6_leftovers_keeps_the_correct_ipv4_rules() {
    let plan = plan(&[], false);
    let fake = FakeNetfilter::default();
    // IPv4 is applied (a rollback would find its rules to remove).
    fake.script_saves(Family::V4, &["", &installed(&plan, Family::V4)]);
    // IPv6 is off now, but an earlier IPv6-on run left its rules.
    fake.script_saves(Family::V6, &[&installed(&other_config(), Family::V4)]);
    fake.fail_restore(Family::V6, 0, "ip6tables-restore: line 3 failed");
    apply(RECONCILE, &plan, &fake).unwrap_err();
    assert_eq!(
        restores(&fake, Family::V4),
        vec![restore_input(&token_rules(&plan, Family::V4)).render()],
        "no IPv4 undo"
    );
    assert_eq!(restores(&fake, Family::V6).len(), 1, "a leftovers-only family is not rolled back");
}

#[test]
fn ipv6_leftovers_are_removed_under_reconcile_whatever_ipv4_says() {
    let plan = plan(&[], false);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&installed(&plan, Family::V4)]);
    fake.script_saves(Family::V6, &[&installed(&other_config(), Family::V4)]);
    apply(RECONCILE, &plan, &fake).unwrap();
    let v6 = restores(&fake, Family::V6);
    assert_eq!(v6.len(), 1, "{v6:?}");
    assert!(v6[0].contains("-X ISTIO_TPROXY") && !v6[0].contains("-j DROP"), "{}", v6[0]);
    assert!(restores(&fake, Family::V4).iter().all(|input| is_check(input)), "IPv4 is compatible");
}

#[test]
fn one_family_still_empty_is_a_delta_for_the_run() {
    // IPv4 already holds this configuration; IPv6 (just switched on) holds nothing.
    let plan = plan(&[], true);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&installed(&plan, Family::V4)]);
    fake.script_saves(Family::V6, &[""]);
    apply(Settings { enable_ipv6: true, ..RECONCILE }, &plan, &fake).unwrap();
    let v4 = restores(&fake, Family::V4);
    assert!(is_check(&v4[0]), "IPv4's rules are checked: {v4:?}");
    assert!(
        v4[1].contains("-I INPUT 1 -j ISTIO_GUARDRAIL") && v4[1].contains("-N ISTIO_OUTPUT"),
        "IPv4 rebuilt: {}",
        v4[1]
    );
    let v6 = restores(&fake, Family::V6);
    assert_eq!(v6.len(), 1, "{v6:?}");
    let planned = restore_input(&token_rules(&plan, Family::V6)).render();
    assert!(
        v6[0].contains(&planned) && v6[0].contains("-I INPUT 1 -j ISTIO_GUARDRAIL"),
        "IPv6 guarded apply: {}",
        v6[0]
    );
}

// ---- Intermediate states a killed run leaves (issue: every one recoverable). ----

/// The ops that tear down a leftover armed guardrail, as a block of their own.
const TEARDOWN: &str =
    "* filter\n-D FORWARD -j ISTIO_GUARDRAIL\n-D INPUT -j ISTIO_GUARDRAIL\n-D OUTPUT -j ISTIO_GUARDRAIL\n\
                        -F ISTIO_GUARDRAIL\n-X ISTIO_GUARDRAIL\n";

/// The pod's own default-deny: exactly what upstream's guardrails look like.
const POD_DROPS: &str = "*filter\n-A INPUT -p tcp -j DROP\n-A OUTPUT -p udp -j DROP\nCOMMIT\n";

fn tears_down_the_leftover(input: &str) -> bool {
    input.starts_with(TEARDOWN)
}

#[test]
fn leftover_guardrails_are_drift_and_every_run_removes_them() {
    let plan = plan(&[], false);
    let state = format!("{}{}{POD_DROPS}", installed(&plan, Family::V4), armed_as_saved());
    for settings in [DEFAULT, RECONCILE, CLEANUP_ONLY] {
        let (fake, result) = run_over(&state, settings, &plan);
        result.unwrap();
        let writes: Vec<String> = restores(&fake, Family::V4).into_iter().filter(|input| !is_check(input)).collect();
        assert_eq!(writes.len(), 1, "{settings:?}: {writes:?}");
        assert!(tears_down_the_leftover(&writes[0]), "{settings:?}: the guardrail stays:\n{}", writes[0]);
        assert!(!writes[0].contains("-D INPUT -p tcp -j DROP"), "{settings:?}: the pod's DROP went:\n{}", writes[0]);
        assert!(!writes[0].contains("-D OUTPUT -p udp -j DROP"), "{settings:?}: the pod's DROP went:\n{}", writes[0]);
    }
    // Without --reconcile the rules are kept (they are this configuration's): only the teardown.
    let (fake, _) = run_over(&state, DEFAULT, &plan);
    let disarm = restores(&fake, Family::V4).pop().unwrap_or_default();
    assert_eq!(disarm, format!("{TEARDOWN}COMMIT\n"));
}

#[test]
fn the_pods_own_drops_survive_a_reconcile_and_a_cleanup() {
    let plan = plan(&[], false);
    let state = format!("{}{POD_DROPS}", installed(&other_config(), Family::V4));
    for settings in [RECONCILE, CLEANUP_ONLY] {
        let (fake, result) = run_over(&state, settings, &plan);
        result.unwrap();
        let inputs = restores(&fake, Family::V4);
        assert_eq!(inputs.len(), 1, "{settings:?}: {inputs:?}");
        // The run deletes no DROP rule: the pod's are never named, the guardrail goes by its chain.
        assert!(
            !inputs[0].lines().any(|line| line.starts_with("-D ") && line.ends_with("-j DROP")),
            "{settings:?}: {}",
            inputs[0]
        );
    }
}

#[test]
fn a_first_run_killed_between_table_commits_is_completed_by_a_plain_rerun() {
    let plan = other_config();
    let full = token_rules(&plan, Family::V4);
    // TPROXY's input commits mangle before nat: the kill left mangle only.
    let mangle: Vec<_> = full.iter().filter(|rule| rule.table == crate::plan::Table::Mangle).cloned().collect();
    assert!(!mangle.is_empty() && mangle.len() < full.len());
    let (fake, result) = run_over(&installed_state(&mangle), DEFAULT, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    assert!(is_check(&inputs[0]) && inputs[0].starts_with("* mangle\n"), "mangle is checked: {}", inputs[0]);
    let nat: Vec<_> = full.iter().filter(|rule| rule.table == crate::plan::Table::Nat).cloned().collect();
    assert_eq!(inputs[1], restore_input(&nat).render(), "only the missing nat table is applied");
    // Another configuration's partial state is not completed: upstream's decision stands.
    let (fake, result) = run_over(&installed_state(&mangle), DEFAULT, &self::plan(&[], false));
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs, vec![restore_input(&token_rules(&self::plan(&[], false), Family::V4)).render()]);
}

#[test]
fn a_committed_prefix_in_saves_spelling_is_verified_in_memory() {
    let plan = other_config();
    let saved = installed_as_saved(&plan, Family::V4);
    // The mangle block only: what a kill between the two table commits leaves.
    let mangle: String = saved.split_inclusive("COMMIT\n").filter(|block| block.starts_with("*mangle")).collect();
    assert!(!mangle.is_empty(), "{saved}");
    let (fake, result) = run_over(&mangle, DEFAULT, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "no -C restore: {inputs:?}");
    assert!(inputs[0].starts_with("* nat\n") && !inputs[0].contains("* mangle"), "{}", inputs[0]);
}

#[test]
fn a_run_killed_between_families_is_completed_by_a_plain_rerun() {
    let plan = plan(&[], true);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&installed(&plan, Family::V4)]);
    fake.script_saves(Family::V6, &[""]);
    apply(Settings { enable_ipv6: true, ..DEFAULT }, &plan, &fake).unwrap();
    let v4 = restores(&fake, Family::V4);
    assert!(v4.iter().all(|input| is_check(input)), "IPv4 is only checked: {v4:?}");
    assert_eq!(restores(&fake, Family::V6), vec![restore_input(&token_rules(&plan, Family::V6)).render()]);
}

/// One mechanism: a refused guardrail block is an ordinary failure, never retried in another
/// form; the block committed nothing, so there is nothing to take back but what the state shows.
#[test]
fn a_refused_guardrail_block_fails_the_run_without_a_retry() {
    let plan = plan(&[], false);
    let state = installed(&other_config(), Family::V4);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&state, &state]);
    fake.fail_restore(Family::V4, 0, "iptables-restore: line 8 failed");
    apply(RECONCILE, &plan, &fake).unwrap_err();
    let inputs = restores(&fake, Family::V4);
    assert!(inputs[0].starts_with("* filter\n-N ISTIO_GUARDRAIL\n"), "{inputs:?}");
    assert!(inputs.iter().all(|input| !input.contains("-I INPUT 1 -p tcp -j DROP")), "no bare retry: {inputs:?}");
    assert!(inputs[1..].iter().all(|input| !input.contains("-N ISTIO_GUARDRAIL")), "armed once: {inputs:?}");
}

/// A reconcile over a guardrail a killed run left: the first filter block tears it down and
/// arms this run's own (both in one commit, so the window never opens), the last disarms; the
/// pod's own DROPs are never named.
#[test]
fn a_reconcile_replaces_a_leftover_guardrail_in_its_first_block() {
    let plan = plan(&[], false);
    let state = format!("{}{}{POD_DROPS}", installed(&other_config(), Family::V4), armed_as_saved());
    let (fake, result) = run_over(&state, RECONCILE, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let input = &inputs[0];
    assert!(input.starts_with(&format!("{TEARDOWN}-N ISTIO_GUARDRAIL\n")), "{input}");
    let lines: Vec<&str> = input.lines().collect();
    let first_commit = lines.iter().position(|line| *line == "COMMIT").expect("a first block");
    let disarm = lines.iter().rposition(|line| *line == "* filter").expect("a final filter block");
    assert!(lines[first_commit..disarm].iter().all(|line| !line.contains("ISTIO_GUARDRAIL")), "{input}");
    assert!(input.ends_with("-F ISTIO_GUARDRAIL\n-X ISTIO_GUARDRAIL\nCOMMIT\n"), "{input}");
    assert!(!input.contains("-D INPUT -p tcp -j DROP") && !input.contains("-D OUTPUT -p udp -j DROP"));
}
