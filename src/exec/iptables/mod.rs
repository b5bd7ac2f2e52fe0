//! Applying the plan with iptables (`apply.md` §1.5, §3): detect the tool per family, read the
//! current state, decide (§3.4), change each family with one restore input, and log the final
//! state whatever happened.
//!
//! Processes per run, default sidecar on a fresh pod: one `iptables-nft-restore` (detection finds
//! no table of either flavour without running anything, and the final state is the restore
//! input applied to empty tables). A rerun with nothing to change: one `-save` (detection and
//! state read), compared in memory with the plan rendered as `-save` prints it; only when that
//! comparison cannot vouch for every rule does one restore hold every `-C` check. Its final
//! state is the state it read.

pub(crate) mod check;
mod commands;
mod compose;
mod detect;
mod guardrail;
mod recognise;
mod resume;
mod sandbox;
pub(crate) mod state;
mod undo;

#[cfg(test)]
mod flow_recovery_tests;
#[cfg(test)]
mod flow_tests;

use crate::config::{Config, IptablesBackend};
use crate::error::{Error, Result};
use crate::exec::journal::{self, Action};
use crate::exec::seam::Netfilter;
use crate::plan::{Family, Plan};
use crate::render::iptables::{check_input, restore_input, token_rules, TokenRule};
use crate::render::restore::RestoreInput;
use crate::render::save::{saved_rules, SavedRule};

use commands::family_label;
pub use commands::CommandError;
pub(crate) use commands::{Runner, Tool, Variant};
use compose::Steps;
pub(crate) use detect::kernel_lists_no_tables;
use state::{Comparison, Decision, State};

/// What steers the flow, taken from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    pub enable_ipv6: bool,
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
    pub forced_backend: Option<IptablesBackend>,
}

impl Settings {
    pub(crate) fn of(config: &Config) -> Settings {
        Settings {
            enable_ipv6: config.enable_ipv6,
            reconcile: config.reconcile,
            cleanup_only: config.cleanup_only,
            force_apply: config.force_apply,
            forced_backend: config.force_iptables_binary,
        }
    }
}

/// One family's tool, plan and state through the run.
struct FamilyRun {
    tool: Tool,
    rules: Vec<TokenRule>,
    /// The same rules as `-save` would print them (the in-memory "already applied" check).
    saved_rules: Vec<SavedRule>,
    /// The plan's restore input for this family (when resuming an interrupted apply of this
    /// configuration: only the tables still missing).
    planned: RestoreInput,
    /// `-save` output at the start, and parsed, without a guardrail a killed run left ...
    saved: String,
    before: State,
    /// ... which is kept apart: it is drift whatever the configuration, and every run removes it.
    guardrail: guardrail::Leftover,
    /// IPv6 while it is off: read only so that `--reconcile` and `--cleanup-only` can remove an
    /// earlier IPv6-on run's rules; nothing is planned for it.
    leftovers_only: bool,
    /// The input of the last restore attempted: a rollback takes it back, and the final state
    /// must be read again.
    attempted: Option<RestoreInput>,
    /// The text of a restore that succeeded.
    restored: Option<String>,
}

impl FamilyRun {
    fn label(&self) -> &'static str {
        self.tool.family_label()
    }
}

/// Detection alone (for `doctor`): the program a run would use for `family`, and the evidence.
/// Read-only, like every detection: it runs only `-save` and `--version`.
pub(crate) fn detect_only(family: Family, forced: Option<IptablesBackend>) -> Result<journal::IptablesChoice> {
    // Zero: the default command deadline.
    let system = crate::exec::seam::System::new(false, None, std::time::Duration::ZERO);
    detect::detect_with_evidence(family, forced, &system).map(|(_, choice)| choice)
}

pub(crate) fn apply(config: Settings, plan: &Plan, runner: &dyn Netfilter) -> Result<()> {
    // With IPv6 off nothing is planned for it, but an earlier run may have had it on: a
    // reconcile or a cleanup must not leave that run's IPv6 capture behind.
    let ipv6_leftovers = !config.enable_ipv6 && (config.reconcile || config.cleanup_only);
    let mut families = vec![(Family::V4, false)];
    if config.enable_ipv6 || ipv6_leftovers {
        families.push((Family::V6, ipv6_leftovers));
    }
    let mut runs = Vec::new();
    for (family, leftovers_only) in families {
        let detected = match detect::detect(family, config.forced_backend, runner) {
            Ok(detected) => {
                // Before anything changes: legacy's `-save` works without CAP_NET_RAW, its
                // restore then fails cryptically ("unable to initialize table 'nat'").
                runner.can_change_with(detected.tool.variant)?;
                detected
            }
            // No ip6tables is fine while IPv6 is off: there can be no IPv6 rules to remove.
            Err(e) if leftovers_only => {
                tracing::debug!("not looking for IPv6 leftovers: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!("did not find a working iptables binary for {}: {e}", family_label(family));
                return Err(e);
            }
        };
        let rules = if leftovers_only { Vec::new() } else { token_rules(plan, family) };
        let saved_rules = if leftovers_only { Vec::new() } else { saved_rules(plan, family) };
        let planned = restore_input(&rules);
        let (before, guardrail) = guardrail::split(State::parse(&detected.saved));
        runs.push(FamilyRun {
            saved_rules,
            before,
            guardrail,
            saved: detected.saved,
            tool: detected.tool,
            rules,
            planned,
            leftovers_only,
            attempted: None,
            restored: None,
        });
    }
    let result = run(config, runner, &mut runs);
    log_final_state(runner, &runs);
    result
}

fn run(config: Settings, runner: &dyn Netfilter, runs: &mut [FamilyRun]) -> Result<()> {
    let (residue, delta) = verify(runner, runs, config);
    let flags = state::Flags {
        reconcile: config.reconcile,
        cleanup_only: config.cleanup_only,
        force_apply: config.force_apply,
    };
    let mut decision = state::decide(residue, delta, flags);
    let plain = !flags.reconcile && !flags.cleanup_only && !flags.force_apply;
    if residue && delta && plain && resume(runner, runs) {
        tracing::info!("The residues are part of this configuration's own rules (an interrupted run): completing it");
        decision = Decision { cleanup: false, guardrails: false, apply: true };
    } else if residue && delta && !flags.reconcile {
        tracing::info!("reconcile is recommended but no-reconcile flag is set. Unexpected behavior may occur due to preexisting iptables rules");
    }
    if decision.guardrails {
        tracing::info!("Setting up guardrails");
    }
    if decision.cleanup {
        tracing::info!("Performing cleanup of existing iptables");
    }
    if decision.apply {
        tracing::info!("Applying iptables chains and rules");
    }
    for index in 0..runs.len() {
        let run = &mut runs[index];
        let family_decision = if run.leftovers_only {
            // Only removal: no guardrails (nothing is rebuilt) and nothing to apply. Under
            // `--reconcile` it happens whatever the IPv4 verdict, since that verdict cannot
            // see this family.
            let istio = recognise::has_istio_rules(&run.before, &[]) || !run.guardrail.is_empty();
            let cleanup = decision.cleanup || (flags.reconcile && istio);
            Decision { cleanup, guardrails: false, apply: false }
        } else {
            decision
        };
        if let Err(err) = change(runner, run, family_decision) {
            // A failed removal of leftovers changes nothing the planned families did, so their
            // (correct) rules stay.
            if !runs[index].leftovers_only {
                rollback(runner, &runs[..=index], decision);
            }
            return Err(err);
        }
    }
    if decision.guardrails {
        tracing::info!("Removing guardrails");
    }
    if decision.apply && !delta && flags.force_apply {
        tracing::warn!("The forced apply of iptables changes succeeded despite the presence of conflicting rules or chains. If you encounter this message, please consider reporting it as an issue.");
    }
    journal::record_action(action_taken(decision, flags, runs));
    Ok(())
}

/// The action a successful run took, from its decision (and the IPv6 leftovers it removed).
fn action_taken(decision: Decision, flags: state::Flags, runs: &[FamilyRun]) -> Action {
    let removed_leftovers = runs.iter().any(|run| run.leftovers_only && run.restored.is_some());
    match (decision.cleanup, decision.apply) {
        _ if flags.cleanup_only => Action::CleanedUp,
        (true, true) => Action::Reconciled,
        (false, true) => Action::Applied,
        _ if removed_leftovers => Action::Reconciled,
        _ => Action::Unchanged,
    }
}

/// §3.2–3.3: the global (residue, delta) verdict, logged as upstream does. With `reconcile`,
/// Istio rules in built-in chains that the plan does not have are a delta too: upstream's
/// checks only ask whether the planned rules exist, so a reconcile would keep them.
fn verify(runner: &dyn Netfilter, runs: &[FamilyRun], config: Settings) -> (bool, bool) {
    let (mut residue, mut delta) = (false, false);
    // A leftovers-only family (IPv6 while off) is upstream's "not read": it decides nothing
    // for the others, and `run` cleans it on its own.
    for run in runs.iter().filter(|run| !run.leftovers_only) {
        let planned = !run.rules.is_empty();
        let guardrail_left = !run.guardrail.is_empty();
        let has_residue = run.before.has_entries() || guardrail_left;
        if guardrail_left {
            tracing::warn!(
                "Found the {} guardrail chain {} left by an interrupted run: it is drift and will be removed",
                run.label(),
                crate::chains::GUARDRAIL
            );
        }
        let family_delta = match state::compare(&State::of(&run.planned), &run.before) {
            Comparison::Clean => planned,
            Comparison::Differs => true,
            Comparison::NeedsRuleCheck
                if config.reconcile && recognise::has_stale_built_in_rules(&run.before, &run.rules) =>
            {
                tracing::info!(
                    "Found {} Istio rules in built-in chains that the current configuration does not create",
                    run.label()
                );
                true
            }
            // Nothing planned: nothing to check (and no process to spend on it). A cleanup
            // removes the same whatever the checks would say, so it does not run them either.
            Comparison::NeedsRuleCheck if !planned || config.cleanup_only => false,
            Comparison::NeedsRuleCheck if state::holds_every_rule(&run.before, &run.saved_rules) => {
                tracing::debug!("{} rules verified in memory: every planned rule is present", run.label());
                false
            }
            Comparison::NeedsRuleCheck => {
                tracing::debug!("{} rules not verified in memory; checking each with iptables (-C)", run.label());
                !rules_present(runner, run)
            }
        };
        if has_residue && !planned {
            tracing::info!("Ignoring residues because no rules are planned for {}", run.label());
        }
        residue |= has_residue && planned;
        delta |= family_delta || guardrail_left;
    }
    if !residue {
        tracing::info!("Clean-state detected, new iptables are needed");
        return (false, true);
    }
    if delta {
        tracing::info!("Found residues of old iptables rules/chains, reconciliation is recommended");
    } else {
        tracing::info!("Found compatible residues of old iptables rules/chains, reconciliation not needed");
    }
    (residue, delta)
}

/// Whether every planned family's state is a committed prefix of this configuration (see
/// `resume`) and some table of it is there; if so each family's planned input becomes the
/// tables it still misses. (Foreign rules alone are upstream's residue: the whole plan is
/// applied either way.)
fn resume(runner: &dyn Netfilter, runs: &mut [FamilyRun]) -> bool {
    let mut missing = Vec::new();
    let mut any_present = false;
    for run in runs.iter().filter(|run| !run.leftovers_only) {
        let Some(found) = resume::resumption(&run.before, &State::of(&run.planned), &run.rules) else {
            return false;
        };
        if !found.present.is_empty() {
            let present: Vec<SavedRule> =
                run.saved_rules.iter().filter(|rule| found.present.contains(&rule.table)).cloned().collect();
            let verified =
                state::holds_every_rule(&run.before, &present) || checks_pass(runner, &run.tool, &found.present_checks);
            if !verified {
                return false;
            }
            any_present = true;
        }
        missing.push(found.missing);
    }
    if !any_present {
        return false;
    }
    for (run, missing) in runs.iter_mut().filter(|run| !run.leftovers_only).zip(missing) {
        run.planned = missing;
    }
    true
}

/// Upstream's `-C` checks, all in one restore input.
fn rules_present(runner: &dyn Netfilter, run: &FamilyRun) -> bool {
    checks_pass(runner, &run.tool, &check_input(&run.rules))
}

fn checks_pass(runner: &dyn Netfilter, tool: &Tool, checks: &RestoreInput) -> bool {
    match runner.restore(tool, &checks.render()) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("Ignoring iptables command error: {}", e.xtables_text());
            false
        }
    }
}

/// Cleanup and/or apply for one family, as one restore input; a guardrail an interrupted run
/// left is torn down whatever the decision.
fn change(runner: &dyn Netfilter, run: &mut FamilyRun, decision: Decision) -> Result<()> {
    let steps = Steps {
        remove: decision.cleanup.then_some(&run.before),
        guard: decision.guardrails,
        leftover: Some(&run.guardrail),
        apply: decision.apply.then_some(&run.planned),
    };
    let input = compose::compose(steps, &run.rules);
    if input.is_empty() {
        return Ok(());
    }
    let text = input.render();
    tracing::info!(
        "Running iptables restore with: {} and the following input:\n{}",
        run.tool.restore_program(),
        text.trim()
    );
    run.attempted = Some(input);
    match runner.restore(&run.tool, &text) {
        Ok(()) => {
            run.restored = Some(text);
            Ok(())
        }
        Err(source) => {
            tracing::error!("Command error: {}", source.xtables_text());
            Err(Error::RestoreFailed { program: run.tool.program.clone(), family: run.label(), source })
        }
    }
}

/// After a failed restore in the last of `runs`: no family may stay half-captured while
/// another has nothing. Families that succeeded lose everything Istio (for a first apply that is
/// exactly what this run added; after a reconcile the old rules are gone already). The failed
/// family (which may have committed some tables, and its guardrails) loses what this run added;
/// after a reconcile, its remaining old Istio rules go too, rather than a mix of two configs.
fn rollback(runner: &dyn Netfilter, runs: &[FamilyRun], decision: Decision) {
    let failed = runs.len().saturating_sub(1);
    for (index, run) in runs.iter().enumerate() {
        let Some(input) = &run.attempted else { continue };
        let after = match runner.save(&run.tool) {
            Ok(saved) => State::parse(&saved),
            Err(e) => {
                tracing::error!("cannot read {} state to roll back: {}", run.label(), e.xtables_text());
                continue;
            }
        };
        let remove_all = index < failed || decision.cleanup;
        let undo = undo::undo(&run.before, &after, input, remove_all, &run.rules);
        if undo.is_empty() {
            continue;
        }
        let input = undo.render();
        tracing::warn!("Rolling back the {} changes of this run with:\n{}", run.label(), input.trim());
        if let Err(e) = runner.restore(&run.tool, &input) {
            tracing::error!("Command error: {}", e.xtables_text());
        }
    }
}

/// `Final iptables state (IPv4):` and the dump, read again only when this run changed
/// something the run cannot account for: an untouched family still has the state read at the
/// start, and a family that had no table at all now holds exactly what the restore put there
/// (on a fresh pod a final `-save` costs about as much as the restore itself).
fn log_final_state(runner: &dyn Netfilter, runs: &[FamilyRun]) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    for run in runs {
        let label = run.label();
        match (&run.restored, run.attempted.is_some()) {
            (Some(input), _) if run.saved.is_empty() => {
                tracing::info!("Final iptables state ({label}), restored into empty tables:\n{input}");
            }
            (_, false) => tracing::info!("Final iptables state ({label}):\n{}", run.saved),
            (_, true) => {
                if let Ok(saved) = runner.save(&run.tool) {
                    tracing::info!("Final iptables state ({label}):\n{saved}");
                }
            }
        }
    }
}
