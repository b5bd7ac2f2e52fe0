//! The iptables flow over the recording fake, its decisions: each cell of upstream's decision
//! table (its `executeCommands`: state clean, compatible residue, residue + delta with or
//! without ISTIO chains, foreign rules only, residue where nothing is planned; against
//! default, `--reconcile`, `--cleanup-only`, `--force-apply`). Rollback and the states a
//! killed run leaves are in `flow_recovery_tests.rs`, over the same helpers. No root, no
//! kernel: the fake answers `-save` from a script (the kernel's stand-in, written by
//! `render::save`) and records every restore input.

use std::collections::BTreeMap;

use crate::cli::{self, Parsed};
use crate::config::Config;
use crate::exec::fake::{installed_state, Call, FakeNetfilter};
use crate::host::HostFacts;
use crate::plan::{Family, Plan};
use crate::render::iptables::{restore_input, token_rules, TokenRule};
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
pub(super) fn installed(plan: &Plan, family: Family) -> String {
    installed_state(&token_rules(plan, family))
}

/// The restore inputs the flow fed to `family`'s tool, in order.
pub(super) fn restores(fake: &FakeNetfilter, family: Family) -> Vec<String> {
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

pub(super) fn is_check(input: &str) -> bool {
    input.lines().any(|line| line.starts_with("-C "))
}

pub(super) const DEFAULT: Settings =
    Settings { enable_ipv6: false, reconcile: false, cleanup_only: false, force_apply: false, forced_backend: None };
pub(super) const RECONCILE: Settings = Settings { reconcile: true, ..DEFAULT };
pub(super) const CLEANUP_ONLY: Settings = Settings { cleanup_only: true, ..DEFAULT };
pub(super) const FORCE_APPLY: Settings = Settings { force_apply: true, ..DEFAULT };

/// A pod rule nobody of Istio's wrote.
const FOREIGN: &str = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m tcp --dport 123 -j ACCEPT\nCOMMIT\n";

/// The same sidecar with the inbound capture in TPROXY mode: an "earlier configuration".
pub(super) fn other_config() -> Plan {
    plan(&["-m", "TPROXY"], false)
}

pub(super) fn run_over(state: &str, settings: Settings, plan: &Plan) -> (FakeNetfilter, crate::error::Result<()>) {
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

/// What `-save` prints after `plan` was applied: the fake's installed state with each rule's
/// spec in the form iptables prints it (`render::save`), where the fake keeps the restore's.
/// A rule without a known form (an owner name) keeps the restore's spelling.
pub(super) fn installed_as_saved(plan: &Plan, family: Family) -> String {
    let printed: Vec<TokenRule> = token_rules(plan, family)
        .into_iter()
        .zip(saved_rules(plan, family))
        .map(|(rule, saved)| match saved.spec {
            Some(args) => TokenRule { args, ..rule },
            None => rule,
        })
        .collect();
    installed_state(&printed)
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
    assert_eq!(lines[..2], ["* filter", "-N ISTIO_GUARDRAIL"], "guardrails first");
    // The old TPROXY chains go; the new ones are built after the old are gone, in the same table commit.
    assert!(at("-X ISTIO_TPROXY") > at("-I OUTPUT 1 -j ISTIO_GUARDRAIL"));
    assert!(at("-X ISTIO_OUTPUT") < at("-N ISTIO_OUTPUT"));
    let disarm = lines.iter().rposition(|line| *line == "* filter").expect("a last filter block");
    assert_eq!(
        lines[disarm..],
        [
            "* filter",
            "-D INPUT -j ISTIO_GUARDRAIL",
            "-D FORWARD -j ISTIO_GUARDRAIL",
            "-D OUTPUT -j ISTIO_GUARDRAIL",
            "-F ISTIO_GUARDRAIL",
            "-X ISTIO_GUARDRAIL",
            "COMMIT"
        ],
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
    assert!(inputs[0].contains("-I INPUT 1 -j ISTIO_GUARDRAIL") && inputs[0].contains("-N ISTIO_OUTPUT"));
    assert!(!inputs[0].contains("--dport 123"), "the pod's own rule stays:\n{}", inputs[0]);
    let (fake, result) = run_over(FOREIGN, CLEANUP_ONLY, &plan);
    result.unwrap();
    assert_eq!(restores(&fake, Family::V4), Vec::<String>::new(), "nothing of Istio's to remove");
}

// ---- Residue in a family for which nothing is planned (IPv6 on, the plan IPv4-only). ----

/// Upstream ignores such a family's residue ("no rules are planned"): IPv4, clean, is a clean
/// state, so even `--reconcile` applies without guardrails or cleanup, and IPv6 is untouched.
#[test]
fn residue_where_nothing_is_planned_is_ignored() {
    let plan = plan(&[], false);
    assert_eq!(token_rules(&plan, Family::V6), vec![], "an IPv4-only plan");
    for state in [installed(&other_config(), Family::V4), FOREIGN.to_string()] {
        for settings in [DEFAULT, RECONCILE].map(|settings| Settings { enable_ipv6: true, ..settings }) {
            let fake = FakeNetfilter::default();
            fake.script_saves(Family::V4, &[""]);
            fake.script_saves(Family::V6, &[&state]);
            apply(settings, &plan, &fake).unwrap();
            assert_eq!(
                restores(&fake, Family::V4),
                vec![restore_input(&token_rules(&plan, Family::V4)).render()],
                "{settings:?}: a clean state's apply, no guardrails"
            );
            assert_eq!(restores(&fake, Family::V6), Vec::<String>::new(), "{settings:?}: IPv6 untouched");
        }
    }
}
