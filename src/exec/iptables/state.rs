//! What is already in the kernel, compared with what the plan wants (`apply.md` §3.1–3.4).
//!
//! Both sides are parsed the same way: the expected side from our restore text, the current
//! side from `-save` output. `-save` rewrites rules (`-m tcp` added, options reordered), so rule
//! text is never compared; chain presence and ISTIO rule counts are, and rule content is
//! checked by iptables itself (`-C`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::chains::{self, is_istio};
use crate::render::iptables::TokenRule;

/// The tables the state covers; others (`security`) are ignored.
const TABLES: [&str; 4] = ["filter", "nat", "mangle", "raw"];

/// table → chain → raw rule lines. A chain gets an entry when it has a rule, or when it is an
/// ISTIO chain (declared, possibly empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl State {
    pub(crate) fn parse(text: &str) -> State {
        let mut tables: BTreeMap<String, BTreeMap<String, Vec<String>>> =
            TABLES.iter().map(|t| (t.to_string(), BTreeMap::new())).collect();
        let mut table: Option<String> = None;
        for line in text.split('\n') {
            if line.trim().is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                table = Some(name.trim().to_string());
                continue;
            }
            let Some(chains) = table.as_ref().and_then(|t| tables.get_mut(t)) else { continue };
            if let Some(header) = line.strip_prefix(':') {
                if chains::is_istio(header) {
                    let name = header.split(' ').next().unwrap_or_default();
                    chains.entry(name.to_string()).or_default();
                }
                continue;
            }
            let (mut chain, mut is_rule) = (None, false);
            let tokens: Vec<&str> = line.split(' ').collect();
            for pair in tokens.windows(2) {
                match pair[0] {
                    "-A" | "--append" | "-I" | "--insert" => {
                        chain = Some(pair[1].trim_matches(|c| c == '"' || c == '\''));
                        is_rule = true;
                    }
                    "-N" | "--new" if chains::is_istio(pair[1]) => {
                        chain = Some(pair[1]);
                        is_rule = false;
                    }
                    _ => {}
                }
            }
            if let Some(chain) = chain {
                let rules = chains.entry(chain.to_string()).or_default();
                if is_rule {
                    rules.push(line.to_string());
                }
            }
        }
        State { tables }
    }

    /// Anything at all in the four tables.
    pub(crate) fn has_entries(&self) -> bool {
        self.tables.values().any(|chains| !chains.is_empty())
    }

    /// The raw `-A` lines of one table, in dump order.
    pub(crate) fn rules(&self, table: &str) -> impl Iterator<Item = &String> {
        self.tables.get(table).into_iter().flat_map(|chains| chains.values().flatten())
    }
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

/// Upstream's per-rule `iptables -t T -C …` checks (§3.6) as one restore input: a restore
/// stops at the first `-C` that does not match, so a single process answers "are all planned
/// rules present?".
pub(crate) fn check_input(rules: &[TokenRule]) -> String {
    let mut by_table: BTreeMap<&str, Vec<&TokenRule>> = BTreeMap::new();
    for rule in rules {
        by_table.entry(rule.table.iptables_name()).or_default().push(rule);
    }
    let mut out = String::new();
    for (table, rules) in by_table {
        let _ = writeln!(out, "* {table}");
        for rule in rules {
            let _ = writeln!(out, "-C {} {}", rule.chain, rule.args.join(" "));
        }
        out.push_str("COMMIT\n");
    }
    out
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

    fn chains(state: &State, table: &str) -> Vec<(String, usize)> {
        state.tables[table].iter().map(|(c, r)| (c.clone(), r.len())).collect()
    }

    #[test]
    fn parses_save_output_like_upstream() {
        let state = State::parse(SAVED);
        assert_eq!(state.tables.len(), 4, "only the four tables are kept");
        assert_eq!(
            chains(&state, "nat"),
            vec![("ISTIO_EMPTY".into(), 0), ("ISTIO_INBOUND".into(), 1), ("PREROUTING".into(), 1)]
        );
        assert!(state.tables["filter"].is_empty());
        assert!(state.has_entries());
        assert!(!State::parse("").has_entries());
    }

    #[test]
    fn parses_our_restore_text_including_inserts_and_declarations() {
        let state = State::parse("* nat\n-N ISTIO_X\n-N OTHER\n-I PREROUTING 1 -i eth1 -j RETURN\nCOMMIT\n");
        assert_eq!(chains(&state, "nat"), vec![("ISTIO_X".into(), 0), ("PREROUTING".into(), 1)]);
    }

    #[test]
    fn compares_chains_and_istio_counts() {
        let expected = State::parse(
            "* nat\n-N ISTIO_INBOUND\n-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n",
        );
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

    #[test]
    fn check_input_turns_every_rule_into_a_check() {
        let rule = |table, chain, position, args: &[&str]| TokenRule {
            table,
            chain,
            position,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let rules = [
            rule(Table::Nat, "OUTPUT", Position::Append, &["-j", "ISTIO_OUTPUT"]),
            rule(Table::Mangle, "ISTIO_INBOUND", Position::Insert(2), &["-p", "tcp", "-j", "RETURN"]),
        ];
        assert_eq!(
            check_input(&rules),
            "* mangle\n-C ISTIO_INBOUND -p tcp -j RETURN\nCOMMIT\n* nat\n-C OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
        );
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
