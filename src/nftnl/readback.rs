//! Reads the istio tables back from the kernel and compares them with the desired ones, so an
//! unchanged rerun can leave the ruleset (and its counters) alone.
//!
//! Expressions are compared attribute by attribute: every attribute we send must come back with
//! the same value. The kernel may report attributes it derived (e.g. `redir`'s
//! `proto_max`, `bitwise`'s operation); those are not ours to compare. Counter values and the
//! kernel-chosen names of anonymous sets are ignored; a lookup is compared by its set's elements.

use std::collections::{BTreeMap, HashMap};

use super::ruleset::{
    expressions, BaseChain, DesiredTable, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSETELEM, NFT_MSG_GETTABLE,
};
use super::wire::{attr_be32, attr_string, find_attr, parse_attrs, Attr, Socket, WireError, NFPROTO_INET};
use crate::exec::check::Difference;
use crate::render::nft::{table_name, TABLES};

/// An attribute value in comparable form: nested attributes keyed by type, flag bits dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Canon {
    Leaf(Vec<u8>),
    Tree(BTreeMap<u16, Canon>),
}

/// One expression in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CanonExpr {
    name: String,
    attrs: BTreeMap<u16, Canon>,
}

const NF_ACCEPT: u32 = 1;

/// Synthetic attribute standing for a lookup's set contents.
const SET_ELEMENTS: u16 = 0x3fff;

/// Which attributes of an expression hold `NFTA_DATA_*` (nested) values.
fn data_attrs(name: &str) -> &'static [u16] {
    match name {
        "cmp" => &[3],
        "bitwise" => &[4, 5],
        "range" => &[3, 4],
        "immediate" => &[2],
        _ => &[],
    }
}

/// `NFTA_DATA_VALUE` is a leaf, `NFTA_DATA_VERDICT` holds code and chain.
fn canon_data(bytes: &[u8], depth: usize) -> Canon {
    Canon::Tree(
        parse_attrs(bytes)
            .into_iter()
            .map(|(kind, data)| {
                let value = if depth == 0 && kind == 2 { canon_data(data, 1) } else { Canon::Leaf(data.to_vec()) };
                (kind, value)
            })
            .collect(),
    )
}

/// Parses `NFTA_RULE_EXPRESSIONS`; `sets` maps set names to their sorted elements.
fn canon_exprs(bytes: &[u8], sets: &HashMap<String, Vec<Vec<u8>>>) -> Vec<CanonExpr> {
    let mut out = Vec::new();
    for (_, element) in parse_attrs(bytes) {
        let fields = parse_attrs(element);
        let name = find_attr(&fields, 1).map(|n| attr_string(&n)).unwrap_or_default();
        let data = find_attr(&fields, 2).unwrap_or_default();
        let mut attrs = BTreeMap::new();
        if name != "counter" {
            for (kind, value) in parse_attrs(&data) {
                let value =
                    if data_attrs(&name).contains(&kind) { canon_data(value, 0) } else { Canon::Leaf(value.to_vec()) };
                attrs.insert(kind, value);
            }
        }
        if name == "lookup" {
            // NFTA_LOOKUP_SET (name) and _SET_ID differ between batch and kernel.
            let set = match attrs.remove(&1) {
                Some(Canon::Leaf(set)) => attr_string(&set),
                _ => String::new(),
            };
            attrs.remove(&4);
            let elements = sets.get(&set).cloned().unwrap_or_default();
            attrs.insert(SET_ELEMENTS, Canon::Leaf(elements.concat()));
        }
        out.push(CanonExpr { name, attrs });
    }
    out
}

/// Whether every attribute of `ours` is in `theirs` with the same value.
fn expr_matches(ours: &CanonExpr, theirs: &CanonExpr) -> bool {
    ours.name == theirs.name && ours.attrs.iter().all(|(kind, value)| theirs.attrs.get(kind) == Some(value))
}

#[derive(Debug, Default)]
struct ActualChain {
    base: Option<BaseChain>,
    rules: Vec<Vec<CanonExpr>>,
}

/// An istio table the kernel has, with its `NFTA_TABLE_FLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresentTable {
    pub name: &'static str,
    pub flags: u32,
}

/// The istio tables that exist in the `inet` family.
pub(crate) fn present_tables(socket: &mut Socket) -> Result<Vec<PresentTable>, WireError> {
    let mut present = Vec::new();
    for reply in socket.dump(NFPROTO_INET, NFT_MSG_GETTABLE, &[])? {
        let attrs = parse_attrs(&reply.attrs);
        let name = find_attr(&attrs, 1).map(|n| attr_string(&n)).unwrap_or_default();
        let flags = find_attr(&attrs, 2).and_then(|f| attr_be32(&f)).unwrap_or(0);
        if let Some(table) = TABLES.iter().map(|t| table_name(*t)).find(|t| *t == name) {
            present.push(PresentTable { name: table, flags });
        }
    }
    Ok(present)
}

/// Whether the kernel's istio tables (`present`, from [`present_tables`]) are exactly `desired`:
/// no other istio table, same chains, same rules in the same order.
pub(crate) fn matches(
    socket: &mut Socket,
    desired: &[DesiredTable],
    present: &[PresentTable],
) -> Result<bool, WireError> {
    // A dormant (or otherwise flagged) table is not the active ruleset we want.
    if present.iter().any(|t| t.flags != 0) {
        return Ok(false);
    }
    let mut present: Vec<&str> = present.iter().map(|t| t.name).collect();
    present.sort_unstable();
    let mut wanted: Vec<&str> = desired.iter().map(|t| t.name).collect();
    wanted.sort_unstable();
    if present != wanted {
        return Ok(false);
    }
    for table in desired {
        let actual = read_table(socket, table.name)?;
        if actual.len() != table.chains.len() {
            return Ok(false);
        }
        for chain in &table.chains {
            let Some(theirs) = actual.get(chain.name) else { return Ok(false) };
            if theirs.base != chain.base || theirs.rules.len() != chain.rules.len() {
                return Ok(false);
            }
            if !chain.rules.iter().zip(&theirs.rules).all(|(rule, their_exprs)| rule_matches(rule, their_exprs)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How the kernel's istio tables differ from `desired`, per table and chain, for `check`:
/// tables and chains missing or extra, then rule by rule in kernel order (a planned rule is
/// named by its nft text; the kernel's by its position, as netlink holds no text).
pub(crate) fn differences(
    socket: &mut Socket,
    desired: &[DesiredTable],
    present: &[PresentTable],
) -> Result<Vec<(String, String, Difference)>, WireError> {
    let mut found = Vec::new();
    for table in present.iter().filter(|t| !desired.iter().any(|d| d.name == t.name)) {
        found.push((table.name.to_string(), String::new(), Difference::ExtraChain));
    }
    for table in desired {
        let mut note = |chain: &str, difference| found.push((table.name.to_string(), chain.to_string(), difference));
        let Some(here) = present.iter().find(|t| t.name == table.name) else {
            note("", Difference::MissingChain);
            continue;
        };
        if here.flags != 0 {
            note(
                "",
                Difference::Changed {
                    live: format!("table flags {:#x}", here.flags),
                    expected: "table flags 0x0".into(),
                },
            );
        }
        let actual = read_table(socket, table.name)?;
        for name in actual.keys().filter(|name| !table.chains.iter().any(|c| c.name == name.as_str())) {
            note(name, Difference::ExtraChain);
        }
        for chain in &table.chains {
            let Some(theirs) = actual.get(chain.name) else {
                note(chain.name, Difference::MissingChain);
                continue;
            };
            if theirs.base != chain.base {
                note(
                    chain.name,
                    Difference::Changed { live: format!("{:?}", theirs.base), expected: format!("{:?}", chain.base) },
                );
            }
            for at in 0..chain.rules.len().max(theirs.rules.len()) {
                match (chain.rules.get(at), theirs.rules.get(at)) {
                    (Some(rule), Some(their_exprs)) if !rule_matches(rule, their_exprs) => note(
                        chain.name,
                        Difference::Changed {
                            live: format!("rule {} as the kernel holds it", at + 1),
                            expected: rule.text.clone(),
                        },
                    ),
                    (Some(rule), None) => note(chain.name, Difference::Missing(rule.text.clone())),
                    (None, Some(_)) => note(chain.name, Difference::Extra(format!("rule {} (not planned)", at + 1))),
                    _ => {}
                }
            }
        }
    }
    Ok(found)
}

/// Whether the kernel's expressions are those of `rule`.
fn rule_matches(rule: &super::ruleset::DesiredRule, their_exprs: &[CanonExpr]) -> bool {
    let mut ours_bytes = Vec::new();
    for attr in expressions(&rule.exprs, None) {
        attr.encode(&mut ours_bytes);
    }
    let mut sets = HashMap::new();
    if let Some(set) = &rule.exprs.set {
        let mut elements = set.elements.clone();
        elements.sort();
        sets.insert(super::expr::ANONYMOUS_SET_NAME.to_string(), elements);
    }
    let ours = canon_exprs(&ours_bytes, &sets);
    ours.len() == their_exprs.len() && ours.iter().zip(their_exprs).all(|(o, t)| expr_matches(o, t))
}

/// Chains and rules of one table, rules in kernel order.
fn read_table(socket: &mut Socket, table: &str) -> Result<HashMap<String, ActualChain>, WireError> {
    let filter = [Attr::string(1, table)];
    let mut chains: HashMap<String, ActualChain> = HashMap::new();
    for reply in socket.dump(NFPROTO_INET, NFT_MSG_GETCHAIN, &filter)? {
        let attrs = parse_attrs(&reply.attrs);
        if find_attr(&attrs, 1).map(|t| attr_string(&t)).as_deref() != Some(table) {
            continue;
        }
        let name = find_attr(&attrs, 3).map(|n| attr_string(&n)).unwrap_or_default();
        let base = find_attr(&attrs, 4).map(|hook| {
            let hook = parse_attrs(&hook).into_iter().map(|(k, v)| (k, v.to_vec())).collect::<Vec<_>>();
            let get = |kind| hook.iter().find(|(k, _)| *k == kind).and_then(|(_, v)| attr_be32(v));
            let kind = find_attr(&attrs, 7).map(|t| attr_string(&t)).unwrap_or_default();
            // NFTA_CHAIN_POLICY: ours are all `accept` (NF_ACCEPT); another policy is a difference.
            let policy = find_attr(&attrs, 5).and_then(|p| attr_be32(&p)).unwrap_or(NF_ACCEPT);
            let kind = if policy == NF_ACCEPT { kind } else { String::from("other") };
            (kind, get(1).unwrap_or(u32::MAX), get(2).unwrap_or(0) as i32)
        });
        let base = match base {
            None => None,
            Some((kind, hook, priority)) => match kind.as_str() {
                // Only our three type names can match a desired chain; anything else differs.
                "nat" | "filter" | "route" => {
                    let kind = match kind.as_str() {
                        "nat" => "nat",
                        "filter" => "filter",
                        _ => "route",
                    };
                    Some(BaseChain { kind, hook, priority })
                }
                _ => Some(BaseChain { kind: "other", hook, priority }),
            },
        };
        chains.insert(name, ActualChain { base, rules: Vec::new() });
    }
    let mut sets: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let rules = socket.dump(NFPROTO_INET, NFT_MSG_GETRULE, &filter)?;
    for reply in &rules {
        let attrs = parse_attrs(&reply.attrs);
        for (_, element) in find_attr(&attrs, 4).as_deref().map(parse_attrs).unwrap_or_default() {
            let fields = parse_attrs(element);
            if find_attr(&fields, 1).map(|n| attr_string(&n)).as_deref() != Some("lookup") {
                continue;
            }
            let data = find_attr(&fields, 2).unwrap_or_default();
            let Some(set) = find_attr(&parse_attrs(&data), 1).map(|s| attr_string(&s)) else { continue };
            if let std::collections::hash_map::Entry::Vacant(slot) = sets.entry(set) {
                let elements = read_set(socket, table, slot.key())?;
                slot.insert(elements);
            }
        }
    }
    for reply in rules {
        let attrs = parse_attrs(&reply.attrs);
        if find_attr(&attrs, 1).map(|t| attr_string(&t)).as_deref() != Some(table) {
            continue;
        }
        let chain = find_attr(&attrs, 2).map(|c| attr_string(&c)).unwrap_or_default();
        let exprs = canon_exprs(&find_attr(&attrs, 4).unwrap_or_default(), &sets);
        chains.entry(chain).or_default().rules.push(exprs);
    }
    Ok(chains)
}

/// A set's element keys, sorted.
fn read_set(socket: &mut Socket, table: &str, set: &str) -> Result<Vec<Vec<u8>>, WireError> {
    let mut elements = Vec::new();
    for reply in socket.dump(NFPROTO_INET, NFT_MSG_GETSETELEM, &[Attr::string(1, table), Attr::string(2, set)])? {
        for (kind, list) in parse_attrs(&reply.attrs) {
            if kind != 3 {
                continue;
            }
            for (_, element) in parse_attrs(list) {
                let Some(key) = find_attr(&parse_attrs(element), 1) else { continue };
                if let Some(value) = find_attr(&parse_attrs(&key), 1) {
                    elements.push(value);
                }
            }
        }
    }
    elements.sort();
    Ok(elements)
}
