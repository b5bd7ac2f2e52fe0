//! The rule plan: every rule the configuration calls for, in upstream's order, as data.
//!
//! A rule names its families, table, chain, position and a typed [`RuleKind`]. The iptables and
//! nft renderers translate kinds into text; neither makes a decision about *which* rules exist.
//! Order is behaviour in netfilter, so the builders below follow upstream's emission order
//! (`tools/istio-iptables/pkg/capture/run.go`) step for step: exclude interfaces, kube-virt,
//! drop-invalid, the fixed chains, inbound, outbound, DNS, the outbound destinations, and the
//! TPROXY tail.

mod addresses;
mod dns;
mod inbound;
mod outbound;
mod rule;
mod tproxy;

pub use rule::*;

use crate::config::Config;

/// The ordered rules for a configuration. The v6 rules are present whether or not IPv6 is
/// enabled; renderers decide what a disabled family means for their backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rules: Vec<Rule>,
    pub enable_ipv6: bool,
}

impl Plan {
    pub fn build(config: &Config) -> Plan {
        let mut plan = PlanBuilder::default();
        outbound::exclude_interfaces(&mut plan, config);
        inbound::kube_virt_short_circuit(&mut plan, config);
        inbound::drop_invalid(&mut plan, config);
        inbound::fixed_chains(&mut plan, config);
        inbound::capture(&mut plan, config);
        outbound::owner_rules(&mut plan, config);
        dns::capture(&mut plan, config);
        outbound::destinations(&mut plan, config);
        tproxy::tail(&mut plan, config);
        Plan { rules: plan.rules, enable_ipv6: config.enable_ipv6 }
    }

    /// The rules that apply to one family, in order, as the iptables backend sees them.
    pub fn rules_for(&self, family: Family) -> impl Iterator<Item = &Rule> {
        let enabled = family == Family::V4 || self.enable_ipv6;
        self.rules.iter().filter(move |rule| enabled && rule.families.contains(family))
    }
}

/// Collects rules; the helpers mirror the shapes upstream's generator uses (both families,
/// one family, a versioned pair whose v4 and v6 copies differ in an address).
#[derive(Default)]
struct PlanBuilder {
    rules: Vec<Rule>,
}

impl PlanBuilder {
    fn push(&mut self, families: Families, table: Table, chain: Chain, position: Position, kind: RuleKind) {
        self.rules.push(Rule { families, table, chain, position, kind });
    }

    fn append(&mut self, table: Table, chain: Chain, kind: RuleKind) {
        self.push(Families::BOTH, table, chain, Position::Append, kind);
    }

    fn append_for(&mut self, families: Families, table: Table, chain: Chain, kind: RuleKind) {
        self.push(families, table, chain, Position::Append, kind);
    }

    fn insert(&mut self, table: Table, chain: Chain, position: u32, kind: RuleKind) {
        self.push(Families::BOTH, table, chain, Position::Insert(position), kind);
    }

    /// A rule whose v4 and v6 copies differ only in an address; v4 first, then v6.
    fn append_versioned(&mut self, table: Table, chain: Chain, kind: impl Fn(Family) -> RuleKind) {
        for family in [Family::V4, Family::V6] {
            self.push(Families::only(family), table, chain, Position::Append, kind(family));
        }
    }
}
