//! The last stage: print the rendered rules (dry-run) or apply them.

mod dry_run;
mod iptables;
pub(crate) mod netlink;
pub mod netns;
mod nftables;
mod process;
mod report;
pub mod routes;

use std::io::Write;

use crate::config::Config;
use crate::error::Result;
use crate::plan::Plan;

pub use report::log_configuration;

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
    match (config.dry_run, config.native_nftables) {
        (true, false) => dry_run::iptables(config, &plan, stdout),
        (true, true) => dry_run::nftables(config, &plan, stdout),
        (false, false) => {
            iptables::apply(config, &plan)?;
            routes::configure(config)
        }
        (false, true) => {
            nftables::apply(config, &plan)?;
            routes::configure(config)
        }
    }
}
