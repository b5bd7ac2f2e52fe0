//! The chains a run installs, as the kernel ends up holding them: the plan's rules placed where
//! their append/insert positions put them, per backend, each with its text in that backend's
//! own syntax (from the renderers, never re-parsed).

use std::collections::HashMap;

use crate::plan::{Chain, Family, Plan, Position, Rule, Table};
use crate::render::{iptables, nft};

/// Which rule set a run would install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables-restore text per family (legacy or nft flavour: the same rules).
    Iptables,
    /// `--native-nftables`: the `inet` tables of the applied transaction.
    Nftables,
}

/// What an installed rule is.
#[derive(Debug, Clone, Copy)]
pub enum Installed<'p> {
    Planned(&'p Rule),
    /// The `meta nfproto ipv6 counter return` a real nft run puts first in each base chain when
    /// IPv6 is off (see `render::nft::apply_transaction`).
    Ipv6Guard,
}

#[derive(Debug, Clone)]
pub struct Entry<'p> {
    pub rule: Installed<'p>,
    pub text: String,
}

/// The installed rules a packet of one family can meet.
#[derive(Debug)]
pub struct Ruleset<'p> {
    pub backend: Backend,
    chains: HashMap<(Table, Chain), Vec<Entry<'p>>>,
}

/// The text of the IPv6 guard; the same words `render::nft::apply_transaction` writes.
const IPV6_GUARD: &str = "meta nfproto ipv6 counter return";

impl<'p> Ruleset<'p> {
    pub fn build(plan: &'p Plan, backend: Backend, family: Family) -> Ruleset<'p> {
        let mut chains: HashMap<(Table, Chain), Vec<Entry<'p>>> = HashMap::new();
        let mut place = |rule: &'p Rule, text: String| {
            let chain = chains.entry((rule.table, rule.chain)).or_default();
            let entry = Entry { rule: Installed::Planned(rule), text };
            match rule.position {
                // iptables `-I CHAIN N` and nft `insert … index N-1` both put the rule before
                // the Nth; past the end they are (nft) or would fail as (iptables) an append.
                Position::Insert(pos) if (pos as usize) <= chain.len() && pos > 0 => {
                    chain.insert(pos as usize - 1, entry)
                }
                _ => chain.push(entry),
            }
        };
        match backend {
            // Each family has its own tables; IPv6 gets none when it is off.
            Backend::Iptables => {
                for rule in plan.rules_for(family) {
                    place(rule, iptables::rule_spec(rule));
                }
            }
            // One `inet` table per kind serves both families; a rule tied to the other family's
            // addresses is present but can never match this packet.
            Backend::Nftables => {
                for rule in plan.rules.iter().filter(|r| nft::TABLES.contains(&r.table)) {
                    if nft::emitted(rule, plan.enable_ipv6) {
                        place(rule, nft::rule_text(rule));
                    }
                }
                if !plan.enable_ipv6 {
                    for ((_, chain), rules) in chains.iter_mut() {
                        if matches!(chain, Chain::Prerouting | Chain::Output) {
                            rules.insert(0, Entry { rule: Installed::Ipv6Guard, text: IPV6_GUARD.to_string() });
                        }
                    }
                }
            }
        }
        Ruleset { backend, chains }
    }

    pub fn chain(&self, table: Table, chain: Chain) -> &[Entry<'p>] {
        self.chains.get(&(table, chain)).map_or(&[], Vec::as_slice)
    }

    /// The table's name as this backend spells it (`nat`, `istio-proxy-nat`).
    pub fn table_name(&self, table: Table) -> &'static str {
        match self.backend {
            Backend::Iptables => table.iptables_name(),
            Backend::Nftables => nft::table_name(table),
        }
    }

    pub fn chain_name(&self, chain: Chain) -> &'static str {
        match self.backend {
            Backend::Iptables => chain.iptables_name(),
            Backend::Nftables => chain.nft_name(),
        }
    }
}
