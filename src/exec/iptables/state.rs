//! What is already in the kernel, compared with what the plan wants (`apply.md` §3.1–3.4).
//!
//! Both sides come from the one typed model, [`RestoreInput`]: the current side is `-save`
//! output parsed into it, the expected side the plan's own restore input (never its text).
//! `-save` rewrites rules (`-m tcp` added, options reordered, marks in hex), so the restore
//! text is never compared with it; chain presence and ISTIO rule counts are, and rule content
//! is compared with each planned rule rendered as `-save` prints it ([`holds_every_rule`],
//! `render::save`). When that cannot say "all present", iptables itself checks (`-C`).

use std::collections::{BTreeMap, HashSet};

use crate::chains::{self, is_istio};
use crate::plan::{Position, Table};
use crate::render::restore::{table_named, Op, RestoreInput};
use crate::render::save::SavedRule;

/// table → chain → raw rule lines. A chain gets an entry when it has a rule, or when it is an
/// ISTIO chain (declared, possibly empty). Tables other than the four (`security`) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub tables: BTreeMap<Table, BTreeMap<String, Vec<String>>>,
}

const TABLES: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

impl State {
    fn empty() -> State {
        State { tables: TABLES.iter().map(|t| (*t, BTreeMap::new())).collect() }
    }

    /// Reads `-save` output (or anything in its format) through the typed model.
    pub(crate) fn parse(text: &str) -> State {
        State::of(&parse_save(text))
    }

    /// The chains and rules `input` declares and adds: every chain with a rule, every ISTIO
    /// chain declared (possibly empty), each rule as its `-A CHAIN SPEC` line. For the plan's
    /// input this is what the kernel would show once it is applied to empty tables (rule text
    /// is never compared, so the plan's own spelling stands in for `-save`'s).
    pub(crate) fn of(input: &RestoreInput) -> State {
        let mut state = State::empty();
        for (table, ops) in input.blocks() {
            let chains = state.tables.entry(table).or_default();
            for op in ops {
                match op {
                    Op::NewChain(chain) if is_istio(chain) => {
                        chains.entry(chain.clone()).or_default();
                    }
                    Op::Add { chain, spec, .. } => {
                        let line = if spec.is_empty() { format!("-A {chain}") } else { format!("-A {chain} {spec}") };
                        chains.entry(chain.clone()).or_default().push(line);
                    }
                    _ => {}
                }
            }
        }
        state
    }

    /// Anything at all in the four tables.
    pub(crate) fn has_entries(&self) -> bool {
        self.tables.values().any(|chains| !chains.is_empty())
    }

    /// The raw `-A` lines of one table, in dump order.
    pub(crate) fn rules(&self, table: Table) -> impl Iterator<Item = &String> {
        self.tables.get(&table).into_iter().flat_map(|chains| chains.values().flatten())
    }
}

/// `-save` output as a restore input (upstream's `GetStateFromSave` reading): the four tables
/// only; `:ISTIO_…` chain headers and `-N ISTIO_…` become declarations; a line that names a
/// chain with `-A`/`--append`/`-I`/`--insert` (the last such token wins) is a rule of that
/// chain, its spec being what follows the chain name. Other lines are skipped.
fn parse_save(text: &str) -> RestoreInput {
    let mut input = RestoreInput::default();
    let mut table: Option<Table> = None;
    for line in text.split('\n') {
        if line.trim().is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = table_named(name.trim());
            continue;
        }
        let Some(table) = table else { continue };
        if let Some(header) = line.strip_prefix(':') {
            if chains::is_istio(header) {
                let name = header.split(' ').next().unwrap_or_default();
                input.table(table).push(Op::NewChain(name.to_string()));
            }
            continue;
        }
        let tokens: Vec<&str> = line.split(' ').collect();
        let mut found: Option<Op> = None;
        for (at, pair) in tokens.windows(2).enumerate() {
            match pair[0] {
                "-A" | "--append" | "-I" | "--insert" => {
                    let chain = pair[1].trim_matches(|c| c == '"' || c == '\'');
                    let spec = tokens[at + 2..].join(" ");
                    found = Some(Op::Add { chain: chain.to_string(), position: Position::Append, spec });
                }
                "-N" | "--new" if chains::is_istio(pair[1]) => found = Some(Op::NewChain(pair[1].to_string())),
                _ => {}
            }
        }
        input.table(table).extend(found);
    }
    input
}

/// How the current state relates to the plan, for one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// Nothing in the four tables.
    Clean,
    /// Something is there and it differs from the plan (missing or extra chains, or rule counts).
    Differs,
    /// Chains and counts match; only iptables can tell whether the rules themselves do.
    NeedsRuleCheck,
}

/// Upstream's checks 1 and 2 of §3.2. Rule order is never considered.
pub(crate) fn compare(expected: &State, current: &State) -> Comparison {
    if !current.has_entries() {
        return Comparison::Clean;
    }
    for (table, chains) in &expected.tables {
        let have = current.tables.get(table);
        for (chain, rules) in chains {
            match have.and_then(|c| c.get(chain)) {
                None => return Comparison::Differs,
                Some(current_rules) if is_istio(chain) && current_rules.len() != rules.len() => {
                    return Comparison::Differs
                }
                Some(_) => {}
            }
        }
    }
    for (table, chains) in &current.tables {
        let wanted = expected.tables.get(table);
        if chains.keys().any(|chain| is_istio(chain) && !wanted.is_some_and(|w| w.contains_key(chain))) {
            return Comparison::Differs;
        }
    }
    Comparison::NeedsRuleCheck
}

/// Whether `current` holds every planned rule, each compared as `-save` prints it: the
/// in-memory answer to upstream's per-rule `-C` checks. True only when every rule has a known
/// printed form and that exact line is in its table; false means "cannot tell", never "absent".
/// One hash set of the current lines keeps this linear in the number of rules.
pub(crate) fn holds_every_rule(current: &State, planned: &[SavedRule]) -> bool {
    let have: HashSet<(Table, &str)> =
        TABLES.iter().flat_map(|table| current.rules(*table).map(move |line| (*table, line.as_str()))).collect();
    planned.iter().all(|rule| rule.line.as_deref().is_some_and(|line| have.contains(&(rule.table, line))))
}

/// The flags that steer §3.4.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
}

/// What a run does, from the global verdict and the flags (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Remove Istio's chains and jumps first.
    pub cleanup: bool,
    /// Protect the cleanup → apply window with DROP rules in `filter`.
    pub guardrails: bool,
    /// Restore the planned rules.
    pub apply: bool,
}

pub(crate) fn decide(residue: bool, delta: bool, flags: Flags) -> Decision {
    let cleanup = (residue && delta && flags.reconcile) || flags.cleanup_only;
    Decision {
        cleanup,
        guardrails: cleanup && !flags.cleanup_only,
        apply: (delta || flags.force_apply) && !flags.cleanup_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Position, Table};
    use crate::render::iptables::{restore_input, TokenRule};

    const SAVED: &str = "# Generated by iptables-save v1.8.9 on Sat Nov 21 21:56:17 2026
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_EMPTY - [0:0]
:OTHER - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
COMMIT
*security
-A OUTPUT -j ACCEPT
COMMIT
";

    fn chains(state: &State, table: Table) -> Vec<(String, usize)> {
        state.tables[&table].iter().map(|(c, r)| (c.clone(), r.len())).collect()
    }

    #[test]
    fn parses_save_output_like_upstream() {
        let state = State::parse(SAVED);
        assert_eq!(state.tables.len(), 4, "only the four tables are kept");
        assert_eq!(
            chains(&state, Table::Nat),
            vec![("ISTIO_EMPTY".into(), 0), ("ISTIO_INBOUND".into(), 1), ("PREROUTING".into(), 1)]
        );
        assert!(state.tables[&Table::Filter].is_empty());
        assert!(state.has_entries());
        assert!(!State::parse("").has_entries());
    }

    fn rule(table: Table, chain: &'static str, position: Position, args: &str) -> TokenRule {
        TokenRule { table, chain, position, args: args.split(' ').map(String::from).collect() }
    }

    #[test]
    fn the_planned_state_has_every_chain_a_rule_is_in_or_jumps_to() {
        let state = State::of(&restore_input(&[
            rule(Table::Nat, "PREROUTING", Position::Insert(1), "-i eth1 -j RETURN"),
            rule(Table::Nat, "OUTPUT", Position::Append, "-j ISTIO_X"),
        ]));
        let expected = vec![("ISTIO_X".into(), 0), ("OUTPUT".into(), 1), ("PREROUTING".into(), 1)];
        assert_eq!(chains(&state, Table::Nat), expected);
    }

    #[test]
    fn compares_chains_and_istio_counts() {
        let expected = State::of(&restore_input(&[
            rule(Table::Nat, "ISTIO_INBOUND", Position::Append, "-p tcp --dport 15008 -j RETURN"),
            rule(Table::Nat, "PREROUTING", Position::Append, "-p tcp -j ISTIO_INBOUND"),
        ]));
        assert_eq!(compare(&expected, &State::parse("")), Comparison::Clean);
        let same = "*nat\n:ISTIO_INBOUND - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A PREROUTING -j FOREIGN\n\
                    -A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN\nCOMMIT\n";
        assert_eq!(compare(&expected, &State::parse(same)), Comparison::NeedsRuleCheck);
        let extra_rule = format!("{same}*nat\n-A ISTIO_INBOUND -j RETURN\nCOMMIT\n");
        assert_eq!(compare(&expected, &State::parse(&extra_rule)), Comparison::Differs);
        let extra_chain = format!("{same}*mangle\n:ISTIO_TPROXY - [0:0]\nCOMMIT\n");
        assert_eq!(compare(&expected, &State::parse(&extra_chain)), Comparison::Differs);
        let foreign_only = "*nat\n-A OUTPUT -p tcp --dport 123 -j ACCEPT\nCOMMIT\n";
        assert_eq!(compare(&expected, &State::parse(foreign_only)), Comparison::Differs);
    }

    /// The table of `apply.md` §3.4, row by row.
    #[test]
    fn decisions_follow_the_upstream_table() {
        let none = Flags::default();
        let reconcile = Flags { reconcile: true, ..none };
        let cleanup_only = Flags { cleanup_only: true, ..none };
        let force = Flags { force_apply: true, ..none };
        let d = |cleanup, guardrails, apply| Decision { cleanup, guardrails, apply };
        // clean state: residue false, delta true
        assert_eq!(decide(false, true, none), d(false, false, true));
        assert_eq!(decide(false, true, reconcile), d(false, false, true));
        assert_eq!(decide(false, true, cleanup_only), d(true, false, false));
        assert_eq!(decide(false, true, force), d(false, false, true));
        // compatible residue
        assert_eq!(decide(true, false, none), d(false, false, false));
        assert_eq!(decide(true, false, reconcile), d(false, false, false));
        assert_eq!(decide(true, false, cleanup_only), d(true, false, false));
        assert_eq!(decide(true, false, force), d(false, false, true));
        // residue and delta
        assert_eq!(decide(true, true, none), d(false, false, true));
        assert_eq!(decide(true, true, reconcile), d(true, true, true));
        assert_eq!(decide(true, true, cleanup_only), d(true, false, false));
        assert_eq!(decide(true, true, force), d(false, false, true));
    }
}
