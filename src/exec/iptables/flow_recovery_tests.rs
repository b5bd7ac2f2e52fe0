//! The iptables flow over the recording fake, its recovery: each rollback path, guardrails
//! (marked, bare, left by a killed run) and the intermediate states a killed run leaves. The
//! decisions themselves are in `flow_tests.rs`, whose helpers these tests share.

use super::apply;
use super::flow_tests::{
    installed, installed_as_saved, is_check, other_config, plan, restores, run_over, CLEANUP_ONLY, DEFAULT, RECONCILE,
};
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
    let after =
        format!("{before}*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m comment --comment istio-iptables-guardrail -j DROP\n-A INPUT -p tcp -m comment --comment istio-iptables-guardrail -j DROP\nCOMMIT\n");
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&before, &after]);
    fake.fail_restore(Family::V4, 0, "iptables-restore: line 30 failed");
    apply(RECONCILE, &plan, &fake).unwrap_err();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    let undo = &inputs[1];
    for line in [
        "-D INPUT -p udp -m comment --comment istio-iptables-guardrail -j DROP",
        "-D INPUT -p tcp -m comment --comment istio-iptables-guardrail -j DROP",
        "-X ISTIO_TPROXY",
        "-X ISTIO_OUTPUT",
    ] {
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
        v4[1].contains("-I INPUT 1 -p tcp -m comment --comment istio-iptables-guardrail -j DROP")
            && v4[1].contains("-N ISTIO_OUTPUT"),
        "IPv4 rebuilt: {}",
        v4[1]
    );
    let v6 = restores(&fake, Family::V6);
    assert_eq!(v6.len(), 1, "{v6:?}");
    let planned = restore_input(&token_rules(&plan, Family::V6)).render();
    assert!(
        v6[0].contains(&planned)
            && v6[0].contains("-I INPUT 1 -p tcp -m comment --comment istio-iptables-guardrail -j DROP"),
        "IPv6 guarded apply: {}",
        v6[0]
    );
}

// ---- Intermediate states a killed run leaves (issue: every one recoverable). ----

const MARK: &str = "-m comment --comment istio-iptables-guardrail -j DROP";

/// The six marked guardrails, as `-save` prints them, in a filter block of their own.
fn leftover_guardrails() -> String {
    let mut text = String::from("*filter\n");
    for (chain, proto) in [("INPUT", "tcp"), ("INPUT", "udp"), ("OUTPUT", "tcp"), ("FORWARD", "udp")] {
        text.push_str(&format!("-A {chain} -p {proto} {MARK}\n"));
    }
    text + "COMMIT\n"
}

/// The pod's own default-deny: exactly what upstream's guardrails look like.
const POD_DROPS: &str = "*filter\n-A INPUT -p tcp -j DROP\n-A OUTPUT -p udp -j DROP\nCOMMIT\n";

fn deletes_all_leftover_guardrails(input: &str) -> bool {
    ["-D INPUT -p tcp", "-D INPUT -p udp", "-D OUTPUT -p tcp", "-D FORWARD -p udp"]
        .iter()
        .all(|start| input.lines().any(|line| line == format!("{start} {MARK}")))
}

#[test]
fn leftover_guardrails_are_drift_and_every_run_removes_them() {
    let plan = plan(&[], false);
    let state = format!("{}{}{POD_DROPS}", installed(&plan, Family::V4), leftover_guardrails());
    for settings in [DEFAULT, RECONCILE, CLEANUP_ONLY] {
        let (fake, result) = run_over(&state, settings, &plan);
        result.unwrap();
        let writes: Vec<String> = restores(&fake, Family::V4).into_iter().filter(|input| !is_check(input)).collect();
        assert_eq!(writes.len(), 1, "{settings:?}: {writes:?}");
        assert!(deletes_all_leftover_guardrails(&writes[0]), "{settings:?}: guardrails stay:\n{}", writes[0]);
        assert!(!writes[0].contains("-D INPUT -p tcp -j DROP"), "{settings:?}: the pod's DROP went:\n{}", writes[0]);
        assert!(!writes[0].contains("-D OUTPUT -p udp -j DROP"), "{settings:?}: the pod's DROP went:\n{}", writes[0]);
    }
    // Without --reconcile the rules are kept (they are this configuration's): only the disarm.
    let (fake, _) = run_over(&state, DEFAULT, &plan);
    let disarm = restores(&fake, Family::V4).pop().unwrap_or_default();
    assert!(!disarm.contains("-N ") && !disarm.contains("-X "), "{disarm}");
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
        // Every DROP the run deletes carries the mark: the pod's bare ones are never named.
        for line in inputs[0].lines().filter(|line| line.starts_with("-D ") && line.ends_with("-j DROP")) {
            assert!(line.ends_with(MARK), "{settings:?}: {line}");
        }
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

#[test]
fn a_refused_guardrail_commit_is_retried_bare_and_other_failures_are_not() {
    let plan = plan(&[], false);
    let state = installed(&other_config(), Family::V4);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&state]);
    fake.fail_restore(Family::V4, 0, "iptables-restore: line 8 failed");
    apply(RECONCILE, &plan, &fake).unwrap();
    let inputs = restores(&fake, Family::V4);
    assert!(inputs.len() == 2 && !inputs[1].contains("comment"), "{inputs:?}");
    // A failure past the guardrail block is an ordinary failure: no retry.
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&state]);
    fake.fail_restore(Family::V4, 0, "iptables-restore: line 30 failed");
    apply(RECONCILE, &plan, &fake).unwrap_err();
    let inputs = restores(&fake, Family::V4);
    assert!(inputs.iter().all(|input| !input.contains("-I INPUT 1 -p tcp -j DROP")), "no bare retry: {inputs:?}");
    assert!(inputs[0].contains(MARK));
}

#[test]
fn without_the_comment_match_guardrails_are_bare() {
    let plan = plan(&[], false);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&installed(&other_config(), Family::V4)]);
    fake.fail_restore(
        Family::V4,
        0,
        "iptables-restore v1.8.9 (legacy): Couldn't load match `comment':No such file or directory\n\nError occurred at line: 2",
    );
    apply(RECONCILE, &plan, &fake).unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    assert!(inputs[0].contains(MARK));
    assert!(!inputs[1].contains("comment"), "{}", inputs[1]);
    assert!(inputs[1].starts_with("* filter\n-I INPUT 1 -p tcp -j DROP\n"), "{}", inputs[1]);
    assert!(inputs[1].ends_with("-D OUTPUT -p udp -j DROP\nCOMMIT\n"), "{}", inputs[1]);
}

/// The pre-clean of a killed run's guardrails happens inside the guarded window of a real
/// reconcile: after the new guardrails are armed and before they are disarmed (so the six
/// stand throughout), each leftover deleted once there, the pod's own DROPs never.
#[test]
fn a_reconcile_pre_cleans_leftover_guardrails_inside_the_guarded_window() {
    let plan = plan(&[], false);
    let state = format!("{}{}{POD_DROPS}", installed(&other_config(), Family::V4), leftover_guardrails());
    let (fake, result) = run_over(&state, RECONCILE, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let lines: Vec<&str> = inputs[0].lines().collect();
    let armed = lines.iter().position(|line| line.starts_with("-I INPUT 1 ")).expect("guardrails armed");
    let disarm = lines.iter().rposition(|line| *line == "* filter").expect("a final filter block");
    assert!(lines[disarm + 1..].iter().all(|line| line.starts_with("-D ") || *line == "COMMIT"), "{}", inputs[0]);
    for (chain, proto) in [("INPUT", "tcp"), ("INPUT", "udp"), ("OUTPUT", "tcp"), ("FORWARD", "udp")] {
        let delete = format!("-D {chain} -p {proto} {MARK}");
        let inside: Vec<usize> = (armed + 1..disarm).filter(|at| lines[*at] == delete).collect();
        assert_eq!(inside.len(), 1, "{delete} once inside the window:\n{}", inputs[0]);
    }
    assert!(!inputs[0].contains("-D INPUT -p tcp -j DROP") && !inputs[0].contains("-D OUTPUT -p udp -j DROP"));
}
