//! `istio-iptables check`: does this namespace hold the rules this configuration installs?
//!
//! Read-only. The iptables backends read each family with one `-save` and compare its Istio
//! part with the plan (`iptables::check`); `--native-nftables` reads the `inet istio-proxy-*`
//! tables back over netlink and compares them with the plan (`nftnl::differences`); TPROXY's
//! policy routing is read back too (`route_state`). Matching
//! prints nothing and exits 0; drift prints one block per table and chain (missing, extra,
//! changed, order) on stdout and exits 3 ([`Error::Drift`]); failing to read exits 1.

use std::fmt::Write as _;
use std::io::Write;

use crate::config::{Config, InboundPorts};
use crate::error::{Error, Result};
use crate::plan::{Family, Plan};

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
    let system = System::new(config.cni_mode, config.network_namespace.clone(), config.command_timeout);
    let found = drift(config, &plan, &system)?;
    if found.is_empty() {
        tracing::info!("the namespace's Istio rules match this configuration");
        return Ok(());
    }
    stdout.write_all(report(&found).as_bytes()).map_err(Error::Stdout)?;
    Err(Error::Drift { differences: found.len() })
}

fn drift(config: &Config, plan: &Plan, system: &dyn Netfilter) -> Result<Vec<Drift>> {
    let mut found = if config.native_nftables {
        system.nftables_differences(plan).map_err(Error::NftNetlink)?
    } else {
        iptables::check::drift(Settings::of(config), plan, system)?
    };
    found.extend(routing_drift(config, system)?);
    Ok(found)
}

/// TPROXY's policy routing (`routes::configure`): with TPROXY and inbound ports, the mark rule
/// and the local route must be there for each family; otherwise a mark rule of this
/// configuration's mark and table is Istio's and extra (the route table alone may be shared).
fn routing_drift(config: &Config, system: &dyn Netfilter) -> Result<Vec<Drift>> {
    let wanted = config.is_tproxy() && config.inbound_ports != InboundPorts::None;
    let (mark, table) = (config.tproxy_mark, config.tproxy_route_table);
    let mut found = Vec::new();
    let families: &[Family] = if config.enable_ipv6 { &[Family::V4, Family::V6] } else { &[Family::V4] };
    for family in families {
        let routing = system.tproxy_routing(*family, mark, table).map_err(Error::RouteRead)?;
        let place = |difference| Drift {
            family: format!("{} routing", family_name(*family)),
            table: String::new(),
            chain: String::new(),
            difference,
        };
        let rule = format!("from all fwmark {mark:#x} lookup {table}");
        let route = format!("local default dev lo table {table}");
        if wanted && !routing.mark_rule {
            found.push(place(Difference::Missing(rule)));
        } else if !wanted && routing.mark_rule {
            found.push(place(Difference::Extra(rule)));
        }
        if wanted && !routing.local_route {
            found.push(place(Difference::Missing(route)));
        }
    }
    Ok(found)
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
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
    use crate::cli::{self, Parsed};
    use crate::exec::fake::FakeNetfilter;
    use crate::host::HostFacts;

    fn config(mode: &str) -> Config {
        let env = [("ENABLE_INBOUND_IPV6".to_string(), "false".to_string())].into();
        let argv = ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", mode, "-b", "*"];
        let Ok(Parsed::Run(flags)) = cli::parse(argv, &env) else { panic!("flags parse") };
        Config::build(&flags, &env, &HostFacts::default()).expect("config loads")
    }

    #[test]
    fn tproxy_routing_is_missing_or_extra() {
        let fake = FakeNetfilter::default();
        let missing = routing_drift(&config("TPROXY"), &fake).unwrap();
        let lines: Vec<&Difference> = missing.iter().map(|d| &d.difference).collect();
        assert_eq!(
            lines,
            vec![
                &Difference::Missing("from all fwmark 0x539 lookup 133".into()),
                &Difference::Missing("local default dev lo table 133".into())
            ]
        );
        assert_eq!(report(&missing[..1]), "IPv4 routing:\n  missing: from all fwmark 0x539 lookup 133\n");
        assert_eq!(routing_drift(&config("REDIRECT"), &fake).unwrap(), vec![]);
        fake.install_routing();
        assert_eq!(routing_drift(&config("TPROXY"), &fake).unwrap(), vec![]);
        let extra = routing_drift(&config("REDIRECT"), &fake).unwrap();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].difference, Difference::Extra("from all fwmark 0x539 lookup 133".into()));
    }

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
