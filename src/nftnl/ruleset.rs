//! The istio tables a plan calls for, as data (tables, chains, rules in final order), and the
//! nf_tables messages that build them: the same ruleset `nft -f -` makes of
//! [`crate::render::nft::apply_transaction`].

use std::collections::HashMap;

use super::expr::{self, RuleExprs, ANONYMOUS_SET_NAME};
use super::ids::{IdResolver, UnknownName};
use super::wire::{Attr, Request, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use crate::plan::{Chain, Plan, Position, Table};
use crate::render::nft::{body, declared_chains, table_name, table_rules, TABLES};

pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;

/// `NFT_SET_ANONYMOUS | NFT_SET_CONSTANT`, as nft creates `{ 53, 15008 }`.
const SET_FLAGS: u32 = 0x1 | 0x2;
/// nft's `inet_service` datatype id: the key type an older nft needs to print the elements.
const SET_KEY_TYPE_INET_SERVICE: u32 = 13;

/// A base chain's `type`, hook and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaseChain {
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
}

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;

/// The base chains of `src/render/nft.rs`' declarations (a unit test keeps the two in step).
pub(crate) fn base_chain(table: Table, chain: Chain) -> Option<BaseChain> {
    let hook = match chain {
        Chain::Prerouting => NF_INET_PRE_ROUTING,
        Chain::Output => NF_INET_LOCAL_OUT,
        _ => return None,
    };
    let (kind, priority) = match (table, chain) {
        (Table::Nat, _) => ("nat", -100),
        (Table::Mangle, Chain::Output) => ("route", -150),
        (Table::Mangle, _) => ("filter", -150),
        (Table::Raw, _) => ("filter", -300),
        (Table::Filter, _) => return None,
    };
    Some(BaseChain { kind, hook, priority })
}

#[derive(Debug, Clone)]
pub(crate) struct DesiredRule {
    pub exprs: RuleExprs,
    /// The rule as nft text, for messages.
    pub text: String,
}

#[derive(Debug, Clone)]
pub(crate) struct DesiredChain {
    pub name: &'static str,
    pub base: Option<BaseChain>,
    pub rules: Vec<DesiredRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct DesiredTable {
    pub name: &'static str,
    pub chains: Vec<DesiredChain>,
}

/// The tables a plan calls for, rules in the order the nft transaction leaves them: inserts at
/// an index land before the rule at that index, and with IPv6 off each base chain starts with
/// the `meta nfproto ipv6` guard.
pub(crate) fn desired(plan: &Plan, ids: &mut IdResolver) -> Result<Vec<DesiredTable>, UnknownName> {
    let mut tables = Vec::new();
    for table in TABLES {
        let rules = table_rules(plan, table);
        if rules.is_empty() {
            continue;
        }
        let mut ordered: HashMap<Chain, Vec<DesiredRule>> = HashMap::new();
        for rule in &rules {
            let chain_rules = ordered.entry(rule.chain).or_default();
            let desired = DesiredRule { exprs: expr::rule_exprs(&rule.kind, ids)?, text: body(&rule.kind) };
            match rule.position {
                // As `transaction()`: an index within the rules already added is an insert.
                Position::Insert(pos) if !chain_rules.is_empty() && (pos as usize) <= chain_rules.len() => {
                    chain_rules.insert(pos as usize - 1, desired);
                }
                _ => chain_rules.push(desired),
            }
        }
        let mut chains = Vec::new();
        for (chain, _) in declared_chains(table) {
            let Some(mut chain_rules) = ordered.remove(chain) else { continue };
            let base = base_chain(table, *chain);
            if base.is_some() && !plan.enable_ipv6 {
                chain_rules.insert(
                    0,
                    DesiredRule { exprs: expr::ipv6_guard(), text: "meta nfproto ipv6 counter return".to_string() },
                );
            }
            chains.push(DesiredChain { name: chain.nft_name(), base, rules: chain_rules });
        }
        tables.push(DesiredTable { name: table_name(table), chains });
    }
    Ok(tables)
}

/// What a batch message creates or deletes, to name it when the kernel refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    Table { table: &'static str, delete: bool },
    Chain { table: &'static str, chain: &'static str, base: Option<BaseChain> },
    Rule { table: &'static str, chain: &'static str, index: usize, text: String, exprs: Vec<&'static str> },
}

/// The batch: the istio tables that exist (`present`) deleted, then the desired tables built
/// from nothing. Only existing tables are deleted, because every deletion makes the kernel wait
/// for an RCU grace period when the socket closes (the `nft -f -` path's add-and-delete of all
/// three costs that on every run). The new tables are created with `NLM_F_EXCL`, so a table that
/// appeared since the read-back makes the batch fail (EEXIST) instead of merging into it.
pub(crate) fn batch(tables: &[DesiredTable], present: &[&'static str]) -> Vec<(Request, Subject)> {
    let mut out = delete_tables(present);
    let mut set_id = 0u32;
    for table in tables {
        let create = Request { msg: NFT_MSG_NEWTABLE, flags: NLM_F_CREATE | NLM_F_EXCL, ..new_table(table.name) };
        out.push((create, Subject::Table { table: table.name, delete: false }));
        for chain in &table.chains {
            let mut attrs = vec![Attr::string(1, table.name), Attr::string(3, chain.name)];
            if let Some(base) = chain.base {
                attrs.push(Attr::string(7, base.kind));
                attrs.push(Attr::Nested(
                    4,
                    vec![Attr::be32(1, base.hook), Attr::Bytes(2, base.priority.to_be_bytes().to_vec())],
                ));
            }
            let request = Request { msg: NFT_MSG_NEWCHAIN, flags: NLM_F_CREATE, attrs };
            out.push((request, Subject::Chain { table: table.name, chain: chain.name, base: chain.base }));
        }
        for chain in &table.chains {
            for (index, rule) in chain.rules.iter().enumerate() {
                let subject = Subject::Rule {
                    table: table.name,
                    chain: chain.name,
                    index,
                    text: rule.text.clone(),
                    exprs: rule.exprs.exprs.iter().map(|e| e.name).collect(),
                };
                let mut set = None;
                if let Some(anonymous) = &rule.exprs.set {
                    set_id += 1;
                    set = Some(set_id);
                    for request in set_requests(table.name, set_id, &anonymous.elements) {
                        out.push((request, subject.clone()));
                    }
                }
                let attrs = vec![
                    Attr::string(1, table.name),
                    Attr::string(2, chain.name),
                    Attr::Nested(4, expressions(&rule.exprs, set)),
                ];
                out.push((Request { msg: NFT_MSG_NEWRULE, flags: NLM_F_CREATE | NLM_F_APPEND, attrs }, subject));
            }
        }
    }
    out
}

/// `delete table` for each of `present`.
pub(crate) fn delete_tables(present: &[&'static str]) -> Vec<(Request, Subject)> {
    present
        .iter()
        .map(|name| {
            let delete = Request { msg: NFT_MSG_DELTABLE, flags: 0, attrs: vec![Attr::string(1, name)] };
            (delete, Subject::Table { table: name, delete: true })
        })
        .collect()
}

fn new_table(name: &str) -> Request {
    Request { msg: NFT_MSG_NEWTABLE, flags: NLM_F_CREATE, attrs: vec![Attr::string(1, name), Attr::be32(2, 0)] }
}

/// `NFTA_RULE_EXPRESSIONS`' elements; a lookup gets the batch id of the set created for it.
pub(crate) fn expressions(rule: &RuleExprs, set_id: Option<u32>) -> Vec<Attr> {
    rule.exprs
        .iter()
        .map(|e| {
            let attrs = e
                .attrs
                .iter()
                .map(|attr| match (e.name, attr, set_id) {
                    ("lookup", Attr::Bytes(4, _), Some(id)) => Attr::be32(4, id),
                    _ => attr.clone(),
                })
                .collect();
            Attr::Nested(1, vec![Attr::string(1, e.name), Attr::Nested(2, attrs)])
        })
        .collect()
}

/// The anonymous constant set and its elements. No `NFTA_SET_USERDATA`: nft 1.0.x adds key
/// byte order and `typeof` hints there, which listing does not need for `inet_service` keys.
fn set_requests(table: &str, set_id: u32, elements: &[Vec<u8>]) -> [Request; 2] {
    let key_len = elements.first().map_or(0, Vec::len) as u32;
    let set = Request {
        msg: NFT_MSG_NEWSET,
        flags: NLM_F_CREATE,
        attrs: vec![
            Attr::string(1, table),
            Attr::string(2, ANONYMOUS_SET_NAME),
            Attr::be32(3, SET_FLAGS),
            Attr::be32(4, SET_KEY_TYPE_INET_SERVICE),
            Attr::be32(5, key_len),
            Attr::be32(10, set_id),
            Attr::Nested(9, vec![Attr::be32(1, elements.len() as u32)]),
        ],
    };
    let list =
        elements.iter().map(|key| Attr::Nested(1, vec![Attr::Nested(1, vec![Attr::Bytes(1, key.clone())])])).collect();
    let elements = Request {
        msg: NFT_MSG_NEWSETELEM,
        flags: NLM_F_CREATE,
        attrs: vec![
            Attr::string(1, table),
            Attr::string(2, ANONYMOUS_SET_NAME),
            Attr::be32(4, set_id),
            Attr::Nested(3, list),
        ],
    };
    [set, elements]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook_name(hook: u32) -> &'static str {
        match hook {
            NF_INET_PRE_ROUTING => "prerouting",
            NF_INET_LOCAL_OUT => "output",
            _ => "?",
        }
    }

    #[test]
    fn base_chains_match_the_nft_text_declarations() {
        for table in TABLES {
            for (chain, spec) in declared_chains(table) {
                let ours = base_chain(table, *chain)
                    .map(|b| format!("{{ type {} hook {} priority {} ; }}", b.kind, hook_name(b.hook), b.priority));
                assert_eq!(ours.as_deref(), *spec, "{table:?} {chain:?}");
            }
        }
    }
}
