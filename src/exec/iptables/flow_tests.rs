//! The iptables flow over the recording fake: verify → decide → compose → apply → rollback,
//! covering each cell of upstream's decision table (its `executeCommands`: state clean,
//! compatible residue, residue + delta with or without ISTIO chains, against default,
//! `--reconcile`, `--cleanup-only`, `--force-apply`) and each rollback path. No root, no kernel: the fake answers `-save` from a script and records
//! every restore input.

use std::collections::BTreeMap;

use crate::cli::{self, Parsed};
use crate::config::Config;
use crate::exec::fake::{installed_state, Call, FakeNetfilter};
use crate::host::HostFacts;
use crate::plan::{Family, Plan};
use crate::render::iptables::{restore_input, token_rules};
use crate::render::save::saved_rules;

use super::{apply, Settings};

/// The injected sidecar's flags (REDIRECT, all inbound ports).
const SIDECAR: [&str; 16] =
    ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090"];

pub(super) fn plan(extra: &[&str], ipv6: bool) -> Plan {
    let env: BTreeMap<String, String> = [("ENABLE_INBOUND_IPV6".to_string(), ipv6.to_string())].into();
    let argv = ["istio-iptables", "--dry-run"].iter().chain(&SIDECAR).chain(extra).copied();
    let Ok(Parsed::Run(flags)) = cli::parse(argv, &env) else { panic!("flags parse") };
    Plan::build(&Config::build(&flags, &env, &HostFacts::default()).expect("config loads"))
}

/// What the kernel shows after `plan` was applied to an empty namespace.
fn installed(plan: &Plan, family: Family) -> String {
    installed_state(&token_rules(plan, family))
}

/// The restore inputs the flow fed to `family`'s tool, in order.
fn restores(fake: &FakeNetfilter, family: Family) -> Vec<String> {
    let program = match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    };
    fake.calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::Restore { program: p, input } if p == program => Some(input),
            _ => None,
        })
        .collect()
}

fn is_check(input: &str) -> bool {
    input.lines().any(|line| line.starts_with("-C "))
}

const DEFAULT: Settings =
    Settings { enable_ipv6: false, reconcile: false, cleanup_only: false, force_apply: false, forced_backend: None };
const RECONCILE: Settings = Settings { reconcile: true, ..DEFAULT };
const CLEANUP_ONLY: Settings = Settings { cleanup_only: true, ..DEFAULT };
const FORCE_APPLY: Settings = Settings { force_apply: true, ..DEFAULT };

/// A pod rule nobody of Istio's wrote.
const FOREIGN: &str = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT\nCOMMIT\n";

/// The same sidecar with the inbound capture in TPROXY mode: an "earlier configuration".
fn other_config() -> Plan {
    plan(&["-m", "TPROXY"], false)
}

fn run_over(state: &str, settings: Settings, plan: &Plan) -> (FakeNetfilter, crate::error::Result<()>) {
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[state]);
    let result = apply(settings, plan, &fake);
    (fake, result)
}

// ---- Clean state: residue false, delta true. ----

#[test]
fn clean_state_applies_the_plan_with_every_flag_but_cleanup_only() {
    let plan = plan(&[], false);
    for settings in [DEFAULT, RECONCILE, FORCE_APPLY] {
        let (fake, result) = run_over("", settings, &plan);
        result.unwrap();
        assert_eq!(
            restores(&fake, Family::V4),
            vec![restore_input(&token_rules(&plan, Family::V4)).render()],
            "{settings:?}"
        );
    }
}

#[test]
fn clean_state_cleanup_only_has_nothing_to_remove() {
    let (fake, result) = run_over("", CLEANUP_ONLY, &plan(&[], false));
    result.unwrap();
    assert_eq!(restores(&fake, Family::V4), Vec::<String>::new());
}

// ---- Compatible residue: residue true, delta false (the -C checks pass). ----

/// What `-save` prints after `plan` was applied: the fake's installed state with each rule
/// line in the form iptables prints it (`render::save`), where the fake keeps the restore's.
pub(super) fn installed_as_saved(plan: &Plan, family: Family) -> String {
    let restored = token_rules(plan, family).into_iter().map(|rule| format!("-A {} {}", rule.chain, rule.spec()));
    let printed = saved_rules(plan, family).into_iter().map(|rule| rule.line);
    // A rule without a known form (an owner name) keeps the restore's spelling.
    let forms: BTreeMap<String, String> =
        restored.zip(printed).filter_map(|(restored, printed)| Some((restored, printed?))).collect();
    installed(plan, family)
        .lines()
        .map(|line| forms.get(line).map_or(line, String::as_str).to_string() + "\n")
        .collect()
}

#[test]
fn an_identical_rerun_is_decided_in_memory_without_a_restore() {
    let plan = plan(&[], false);
    let saved = installed_as_saved(&plan, Family::V4);
    assert!(saved.contains("-m tcp --dport"), "the -save spelling, not the restore's: {saved}");
    for settings in [DEFAULT, RECONCILE] {
        let (fake, result) = run_over(&saved, settings, &plan);
        result.unwrap();
        assert_eq!(restores(&fake, Family::V4), Vec::<String>::new(), "{settings:?}");
    }
}

#[test]
fn a_rule_printed_otherwise_falls_back_to_the_checks() {
    let plan = plan(&[], false);
    let saved = installed_as_saved(&plan, Family::V4);
    // Same chains and counts, one rule that the in-memory comparison cannot vouch for.
    let changed = saved.replacen("--uid-owner 1337", "--uid-owner 1336", 1);
    assert_ne!(changed, saved);
    let (fake, result) = run_over(&changed, DEFAULT, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(is_check(&inputs[0]), "iptables decides: {}", inputs[0]);
}

/// The fake keeps the restore's spelling, which is not `-save`'s: the in-memory comparison
/// cannot vouch for the rules, so iptables checks them (`-C`).
#[test]
fn compatible_residue_only_checks_by_default_and_with_reconcile() {
    let plan = plan(&[], false);
    for settings in [DEFAULT, RECONCILE] {
        let (fake, result) = run_over(&installed(&plan, Family::V4), settings, &plan);
        result.unwrap();
        let inputs = restores(&fake, Family::V4);
        assert_eq!(inputs.len(), 1, "{settings:?}: {inputs:?}");
        assert!(is_check(&inputs[0]), "only the -C checks run: {}", inputs[0]);
    }
}

#[test]
fn compatible_residue_cleanup_only_removes_everything_istio() {
    let plan = plan(&[], false);
    let (fake, result) = run_over(&installed(&plan, Family::V4), CLEANUP_ONLY, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(!is_check(&inputs[0]), "a cleanup does not need the checks");
    for line in ["-D OUTPUT -j ISTIO_OUTPUT", "-F ISTIO_OUTPUT", "-X ISTIO_OUTPUT", "-X ISTIO_INBOUND"] {
        assert!(inputs[0].lines().any(|l| l == line), "{line} missing from\n{}", inputs[0]);
    }
    assert!(!inputs[0].contains("-N "), "nothing is created:\n{}", inputs[0]);
}

#[test]
fn compatible_residue_force_apply_applies_again_and_its_failure_rolls_back() {
    let plan = plan(&[], false);
    let state = installed(&plan, Family::V4);
    let fake = FakeNetfilter::default();
    fake.script_saves(Family::V4, &[&state]);
    // The check passes; the forced apply meets the existing chains, as in the kernel.
    fake.fail_restore(Family::V4, 1, "iptables-restore: line 2 failed: Chain already exists.");
    let err = apply(FORCE_APPLY, &plan, &fake).unwrap_err();
    assert!(err.to_string().starts_with("iptables restore of the IPv4 rules failed: "), "{err}");
    let inputs = restores(&fake, Family::V4);
    assert!(is_check(&inputs[0]));
    assert_eq!(inputs[1], restore_input(&token_rules(&plan, Family::V4)).render());
    // Nothing of it committed (the state reads the same): nothing to undo.
    assert_eq!(inputs.len(), 2, "{inputs:?}");
}

// ---- Residue and delta, ISTIO chains of another configuration present. ----

#[test]
fn stale_istio_chains_default_and_force_apply_only_apply() {
    let plan = plan(&[], false);
    let state = installed(&other_config(), Family::V4);
    for settings in [DEFAULT, FORCE_APPLY] {
        let (fake, result) = run_over(&state, settings, &plan);
        result.unwrap();
        // Chains differ, so no -C check is needed to know; the plan is restored as is (the
        // kernel would refuse it, upstream's behaviour without --reconcile).
        assert_eq!(
            restores(&fake, Family::V4),
            vec![restore_input(&token_rules(&plan, Family::V4)).render()],
            "{settings:?}"
        );
    }
}

#[test]
fn stale_istio_chains_reconcile_guards_removes_and_applies_in_one_input() {
    let plan = plan(&[], false);
    let (fake, result) = run_over(&installed(&other_config(), Family::V4), RECONCILE, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let lines: Vec<&str> = inputs[0].lines().collect();
    let at = |line: &str| lines.iter().position(|l| *l == line).unwrap_or_else(|| panic!("{line} missing"));
    assert_eq!(
        lines[..2],
        ["* filter", "-I INPUT 1 -p tcp -m comment --comment istio-iptables-guardrail -j DROP"],
        "guardrails first"
    );
    // The old TPROXY chains go; the new ones are built after the old are gone, in the same table commit.
    assert!(at("-X ISTIO_TPROXY") > at("-I INPUT 1 -p tcp -m comment --comment istio-iptables-guardrail -j DROP"));
    assert!(at("-X ISTIO_OUTPUT") < at("-N ISTIO_OUTPUT"));
    assert_eq!(
        lines[lines.len() - 2..],
        ["-D OUTPUT -p udp -m comment --comment istio-iptables-guardrail -j DROP", "COMMIT"],
        "guardrails removed last"
    );
}

#[test]
fn stale_istio_chains_cleanup_only_removes_the_old_configuration() {
    let plan = plan(&[], false);
    let (fake, result) = run_over(&installed(&other_config(), Family::V4), CLEANUP_ONLY, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(inputs[0].contains("-X ISTIO_TPROXY") && inputs[0].contains("-X ISTIO_DIVERT"), "{}", inputs[0]);
    assert!(!inputs[0].contains("-N ") && !inputs[0].contains("-j DROP"), "{}", inputs[0]);
}

// ---- Residue and delta, foreign rules only. ----

#[test]
fn foreign_rules_only_apply_with_every_flag_and_are_never_removed() {
    let plan = plan(&[], false);
    let wanted = restore_input(&token_rules(&plan, Family::V4)).render();
    let (fake, result) = run_over(FOREIGN, DEFAULT, &plan);
    result.unwrap();
    assert_eq!(restores(&fake, Family::V4), vec![wanted.clone()]);
    let (fake, result) = run_over(FOREIGN, FORCE_APPLY, &plan);
    result.unwrap();
    assert_eq!(restores(&fake, Family::V4), vec![wanted.clone()]);
    let (fake, result) = run_over(FOREIGN, RECONCILE, &plan);
    result.unwrap();
    let inputs = restores(&fake, Family::V4);
    assert_eq!(inputs.len(), 1);
    assert!(
        inputs[0].contains("-I INPUT 1 -p tcp -m comment --comment istio-iptables-guardrail -j DROP")
            && inputs[0].contains("-N ISTIO_OUTPUT")
    );
    assert!(!inputs[0].contains("--dport 123"), "the pod's own rule stays:\n{}", inputs[0]);
    let (fake, result) = run_over(FOREIGN, CLEANUP_ONLY, &plan);
    result.unwrap();
    assert_eq!(restores(&fake, Family::V4), Vec::<String>::new(), "nothing of Istio's to remove");
}

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
