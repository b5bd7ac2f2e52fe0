//! What a run did, as typed values the flows record while they decide and act: the iptables
//! backend chosen per family and why, the action taken, the programs spawned, the warnings
//! logged. `--report` (`crate::report`) turns it into JSON; nothing here is parsed from logs.
//!
//! The journal is per thread: a run is one thread from parsing to the last route, every
//! program is spawned and every event logged on it, and unit tests running in parallel each
//! see only their own run.

use std::cell::RefCell;

use crate::plan::Family;

/// Why detection chose an iptables variant for a family (`iptables/detect.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// `--force-iptables-binary` / `FORCE_IPTABLES_BINARY` named it.
    Forced,
    /// Legacy's `-save` shows rules, so legacy owns the family.
    LegacyHoldsRules,
    /// The kernel lists no legacy table for the family, so nft was chosen without reading legacy.
    NoLegacyTables,
    /// Legacy's tables hold no rule, so nft was chosen.
    LegacyHasNoRules,
    /// Neither `-legacy` nor `-nft` works: the distribution's plain `iptables`.
    PlainFallback,
}

impl Evidence {
    /// The plain-words reason the report shows.
    pub fn describe(self) -> &'static str {
        match self {
            Evidence::Forced => "forced by --force-iptables-binary",
            Evidence::LegacyHoldsRules => "legacy tables hold rules",
            Evidence::NoLegacyTables => "nft chosen: the kernel lists no legacy table",
            Evidence::LegacyHasNoRules => "nft chosen: no legacy rules",
            Evidence::PlainFallback => "neither the -legacy nor the -nft programs work: plain iptables",
        }
    }
}

/// The iptables program a family used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesChoice {
    pub family: Family,
    /// `iptables-nft`, `ip6tables-legacy`, `iptables`.
    pub program: String,
    /// `legacy` or `nft` (for plain `iptables`, as its `--version` said).
    pub variant: &'static str,
    pub evidence: Evidence,
}

/// What the rule stage did to the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The planned rules were written into a namespace without (conflicting) Istio rules.
    Applied,
    /// The rules were already as planned; nothing was written.
    Unchanged,
    /// Old Istio rules were removed and the planned ones written (`--reconcile`, or nftables
    /// tables that existed and differed).
    Reconciled,
    /// `--cleanup-only` removed Istio's rules.
    CleanedUp,
    /// `--dry-run`: nothing was executed.
    DryRun,
    /// The run failed (its error says where).
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Applied => "applied",
            Action::Unchanged => "unchanged",
            Action::Reconciled => "reconciled",
            Action::CleanedUp => "cleaned-up",
            Action::DryRun => "dry-run",
            Action::Failed => "failed",
        }
    }
}

/// One program the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subprocess {
    pub program: String,
    pub args: Vec<String>,
}

/// Everything recorded during one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    pub iptables: Vec<IptablesChoice>,
    /// `--native-nftables` applied with istio tables already present (so a rebuild replaced them).
    pub nftables_tables_existed: bool,
    pub action: Option<Action>,
    pub subprocesses: Vec<Subprocess>,
    pub warnings: Vec<String>,
}

thread_local! {
    static JOURNAL: RefCell<Journal> = RefCell::new(Journal::default());
}

/// Adds to this thread's journal.
pub fn record(change: impl FnOnce(&mut Journal)) {
    JOURNAL.with(|journal| change(&mut journal.borrow_mut()));
}

/// Empties this thread's journal and returns what it held.
pub fn take() -> Journal {
    JOURNAL.with(|journal| std::mem::take(&mut *journal.borrow_mut()))
}

pub(crate) fn record_subprocess(program: &str, args: &[&str]) {
    let spawned = Subprocess { program: program.to_string(), args: args.iter().map(|a| a.to_string()).collect() };
    record(|journal| journal.subprocesses.push(spawned));
}

pub(crate) fn record_action(action: Action) {
    record(|journal| journal.action = Some(action));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_own_journal() {
        take();
        record_action(Action::Applied);
        record_subprocess("iptables-nft-restore", &["--noflush"]);
        std::thread::spawn(|| {
            record_action(Action::Failed);
            assert_eq!(take().action, Some(Action::Failed));
        })
        .join()
        .unwrap();
        let journal = take();
        assert_eq!(journal.action, Some(Action::Applied));
        assert_eq!(journal.subprocesses[0].args, vec!["--noflush".to_string()]);
        assert_eq!(take(), Journal::default(), "take empties it");
    }

    /// The action the iptables flow records over the fake, for a namespace holding `saved`.
    /// With `checks_fail`, the `-C` checks (the first restore) find the rules missing.
    fn iptables_action(
        settings: crate::exec::iptables::Settings,
        saved: Option<&str>,
        checks_fail: bool,
    ) -> Option<Action> {
        use crate::exec::fake::FakeNetfilter;
        let plan = sidecar_plan("15001");
        let fake = FakeNetfilter::default();
        if let Some(saved) = saved {
            fake.script_saves(Family::V4, &[saved]);
        }
        if checks_fail {
            fake.fail_restore(Family::V4, 0, "iptables-restore: line 3 failed");
        }
        take();
        crate::exec::iptables::apply(settings, &plan, &fake).expect("the flow succeeds");
        take().action
    }

    fn sidecar_plan(proxy_port: &str) -> crate::plan::Plan {
        use crate::cli::{self, Parsed};
        let env = [("ENABLE_INBOUND_IPV6".to_string(), "false".to_string())].into();
        let argv = ["x", "-p", proxy_port, "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*"];
        let Ok(Parsed::Run(flags)) = cli::parse(argv, &env) else { panic!("flags parse") };
        let config = crate::config::Config::build(&flags, &env, &crate::host::HostFacts::default()).unwrap();
        crate::plan::Plan::build(&config)
    }

    #[test]
    fn the_iptables_flow_records_the_action_it_took() {
        use crate::exec::fake::installed_state;
        use crate::exec::iptables::Settings;
        use crate::render::iptables::token_rules;
        let default = Settings::default();
        let installed = installed_state(&token_rules(&sidecar_plan("15001"), Family::V4));
        let other = installed_state(&token_rules(&sidecar_plan("15999"), Family::V4));
        assert_eq!(iptables_action(default, None, false), Some(Action::Applied));
        assert_eq!(iptables_action(default, Some(&installed), false), Some(Action::Unchanged));
        let reconcile = Settings { reconcile: true, ..default };
        assert_eq!(iptables_action(reconcile, Some(&other), true), Some(Action::Reconciled));
        let cleanup = Settings { cleanup_only: true, ..default };
        assert_eq!(iptables_action(cleanup, Some(&installed), false), Some(Action::CleanedUp));
    }

    #[test]
    fn detection_records_its_evidence() {
        use crate::exec::fake::FakeNetfilter;
        use crate::exec::iptables::Settings;
        // The fake has upstream's stub programs only (plain `iptables`), as a dry-run sees.
        let fake = FakeNetfilter::default();
        take();
        crate::exec::iptables::apply(Settings::default(), &sidecar_plan("15001"), &fake).unwrap();
        let journal = take();
        assert_eq!(journal.iptables.len(), 1, "{journal:?}");
        assert_eq!(journal.iptables[0].evidence, Evidence::PlainFallback);
        assert_eq!(journal.iptables[0].program, "iptables");
    }
}
