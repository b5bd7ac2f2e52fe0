//! The last stage: print the rendered rules (dry-run) or apply them.

mod dry_run;
mod fake;
mod iptables;
pub(crate) mod netlink;
pub mod netns;
mod nftables;
mod process;
mod report;
mod routes;
mod seam;

use std::io::Write;

use crate::config::Config;
use crate::error::Result;
use crate::plan::Plan;
use crate::render::nft;
use seam::System;

pub use iptables::CommandError;
pub use report::log_configuration;
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
    let system = System::new(config.cni_mode, config.network_namespace.clone());
    if config.native_nftables {
        let transaction = if config.cleanup_only { nft::cleanup_transaction() } else { nft::apply_transaction(&plan) };
        nftables::apply(&system, &transaction)?;
        tracing::info!("nftables rules programmed:\n{transaction} \n");
    } else {
        iptables::apply(iptables::Settings::of(config), &plan, &system)?;
    }
    routes::configure(config, &system)
}
