//! The last stage: apply the plan, or show what applying it would do (dry-run).
//!
//! Design: one seam for side effects. Every effect on the kernel or the machine goes through the
//! [`seam::Netfilter`] trait: `-save`, `-restore` (a commit), the `-save --version` probe, the
//! kernel's table listing and the installed programs (detection), `nft` (version, check,
//! commit), and the `::6` address, TPROXY mark rule and local route. Two implementations:
//! [`seam::System`] does them (programs via `process::feed_and_wait`, routes over `netlink`),
//! and `fake::FakeNetfilter` answers `-save` from a script, fails the restores it is told to,
//! and records every call. The flows above the seam are the same for both: `iptables::apply`
//! (detect → read state → verify → decide → compose → apply → rollback) and `nftables::apply`
//! (probe → commit). A dry-run is exactly those flows over the fake (as upstream's dry-run is its
//! stub dependency); `dry_run` only chooses what the fake namespace holds (empty, or this
//! configuration's rules under `--cleanup-only`) and prints the restore inputs or transaction
//! the flow issued, plus upstream's recording. The unit tests in `iptables/flow_tests.rs`
//! (decisions) and `iptables/flow_recovery_tests.rs` (rollback, guardrails, killed runs) drive
//! the same flow over scripted states and failures, so every decision and rollback path runs
//! without root. The netlink nf_tables backend (`crate::nftnl`) is two more methods of the seam
//! (`nftables_commit`, `nftables_delete`), the default for `--native-nftables`; `nft -f -` stays
//! behind `ISTIO_NFT_APPLY=nft`. Routes are skipped in dry-run, as upstream does.

pub(crate) mod check;
mod dry_run;
mod fake;
pub(crate) mod iptables;
pub mod journal;
pub(crate) mod netlink;
pub mod netns;
mod nftables;
mod process;
mod report;
mod route_state;
mod routes;
mod seam;

use std::io::Write;

use crate::config::Config;
use crate::error::Result;
use crate::plan::Plan;
use crate::render::nft;
use seam::System;

pub use check::run as check;
pub use iptables::CommandError;
pub use report::log_configuration;
pub use route_state::RouteReadError;
pub use routes::RouteError;

/// Runs the rule stage for a loaded configuration.
pub fn execute(config: &Config, stdout: &mut dyn Write) -> Result<()> {
    if config.native_nftables {
        tracing::info!("native nftables enabled, using nft rules for traffic redirection.");
    } else if config.dry_run {
        tracing::info!("running iptables in dry-run mode, no rule changes will be made");
    }
    if config.skip_rule_apply {
        tracing::info!("skipping rule apply (--skip-rule-apply)");
        return Ok(());
    }
    log_configuration(config);
    let plan = Plan::build(config);
    if config.dry_run {
        return dry_run::run(config, &plan, stdout);
    }
    // In CNI mode the lock is scoped to the pod: its network namespace file.
    let system = System::new(config.cni_mode, config.network_namespace.clone(), config.command_timeout);
    if config.native_nftables && !config.nft_apply_with_binary {
        nftables::apply_over_netlink(&system, &plan, config.cleanup_only)?;
    } else if config.native_nftables {
        let transaction = if config.cleanup_only { nft::cleanup_transaction() } else { nft::apply_transaction(&plan) };
        nftables::apply(&system, &transaction)?;
        // `nft -f -` deletes and rebuilds the tables whatever was there.
        journal::record_action(if config.cleanup_only { journal::Action::CleanedUp } else { journal::Action::Applied });
        tracing::info!("nftables rules programmed:\n{transaction} \n");
    } else {
        iptables::apply(iptables::Settings::of(config), &plan, &system)?;
    }
    routes::configure(config, &system)
}
