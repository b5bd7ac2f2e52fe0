//! `istio-iptables check`: does this namespace hold the rules this configuration installs?
//!
//! Read-only. The iptables backends read each family with one `-save` and compare its Istio
//! part with the plan (`iptables::check`); `--native-nftables` reads the `inet istio-proxy-*`
//! tables back over netlink and compares them with the plan (`nftnl::differences`). Matching
//! prints nothing and exits 0; drift prints one block per table and chain (missing, extra,
//! changed, order) on stdout and exits 3 ([`Error::Drift`]); failing to read exits 1.

use std::fmt::Write as _;
use std::io::Write;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::Plan;

use super::iptables::{self, Settings};
use super::seam::{Netfilter, System};

/// How one chain differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Difference {
    /// An Istio chain the plan has and the namespace does not.
    MissingChain,
    /// An Istio chain the namespace has and the plan does not.
    ExtraChain,
    /// A planned rule that is not there.
    Missing(String),
    /// An Istio rule the plan does not have.
    Extra(String),
    /// A rule that is there in another form than planned.
    Changed { live: String, expected: String },
    /// Every rule is there, not in the planned order (order is behaviour in netfilter).
    Order,
}

/// One difference, and where: family and program (or nftables), table, chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub difference: Difference,
}

impl Drift {
    /// A difference in an `inet istio-proxy-*` table (`chain` empty: the table itself).
    pub(crate) fn nftables(table: String, chain: String, difference: Difference) -> Drift {
        Drift { family: "nftables inet".into(), table, chain, difference }
    }
}

/// Runs the check for a loaded configuration (the target namespace already entered).
pub fn run(config: &Config, stdout: &mut dyn Write) -> Result<()> {
    let plan = Plan::build(config);
    let system = System::new(config.cni_mode, config.network_namespace.clone());
    let found = drift(config, &plan, &system)?;
    if found.is_empty() {
        tracing::info!("the namespace's Istio rules match this configuration");
        return Ok(());
    }
    stdout.write_all(report(&found).as_bytes()).map_err(Error::Stdout)?;
    Err(Error::Drift { differences: found.len() })
}

fn drift(config: &Config, plan: &Plan, system: &dyn Netfilter) -> Result<Vec<Drift>> {
    if config.native_nftables {
        return system.nftables_differences(plan).map_err(Error::NftNetlink);
    }
    iptables::check::drift(Settings::of(config), plan, system)
}

/// The readable diff: one heading per family, table and chain, then its differences.
pub(crate) fn report(found: &[Drift]) -> String {
    let mut text = String::new();
    let mut heading = None;
    for drift in found {
        let this = (drift.family.as_str(), drift.table.as_str(), drift.chain.as_str());
        if heading != Some(this) {
            let place = [this.0, this.1, this.2].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>();
            let _ = writeln!(text, "{}:", place.join(" "));
            heading = Some(this);
        }
        let _ = match &drift.difference {
            Difference::MissingChain if drift.chain.is_empty() => writeln!(text, "  missing table"),
            Difference::ExtraChain if drift.chain.is_empty() => writeln!(text, "  extra table"),
            Difference::MissingChain => writeln!(text, "  missing chain"),
            Difference::ExtraChain => writeln!(text, "  extra chain"),
            Difference::Missing(line) => writeln!(text, "  missing: {line}"),
            Difference::Extra(line) => writeln!(text, "  extra:   {line}"),
            Difference::Changed { live, expected } => {
                writeln!(text, "  changed: {live}\n       to: {expected}")
            }
            Difference::Order => writeln!(text, "  rules in another order than planned"),
        };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_groups_by_family_table_and_chain() {
        let at = |chain: &str, difference| Drift {
            family: "IPv4 (iptables-nft)".into(),
            table: "nat".into(),
            chain: chain.into(),
            difference,
        };
        let text = report(&[
            at("ISTIO_OUTPUT", Difference::Missing("-A ISTIO_OUTPUT -j RETURN".into())),
            at("ISTIO_OUTPUT", Difference::Extra("-A ISTIO_OUTPUT -j ACCEPT".into())),
            at("ISTIO_REDIRECT", Difference::MissingChain),
        ]);
        assert_eq!(
            text,
            "IPv4 (iptables-nft) nat ISTIO_OUTPUT:\n  missing: -A ISTIO_OUTPUT -j RETURN\n  extra:   -A ISTIO_OUTPUT -j ACCEPT\n\
             IPv4 (iptables-nft) nat ISTIO_REDIRECT:\n  missing chain\n"
        );
    }
}
