//! Guardrails: what keeps TCP and UDP out of the pod while `--reconcile` removes the old chains
//! and builds the new ones (`apply.md` §3.8).
//!
//! Upstream inserts six bare rules at the top of the filter table's built-in chains
//! (`-I INPUT|FORWARD|OUTPUT 1 -p tcp|udp -j DROP`), which a pod's own default-deny looks
//! exactly like. Here the guardrail is one chain of its own, [`GUARDRAIL`], holding
//! `-p tcp -j DROP` and `-p udp -j DROP`, jumped to first thing in INPUT, FORWARD and OUTPUT:
//! the same TCP and UDP are dropped in the same window (everything else returns to the
//! built-in chain, as it passes upstream's DROP rules), and the chain's name is the mark. A user
//! chain and a jump need no match extension, so the mark works on every iptables (gVisor has no
//! `comment` match), `-save` shows it unambiguously, and no pod rule can be taken for it.
//!
//! Arming is one block (declaration, rules, jumps), disarming another (jumps, flush, delete),
//! and each table block commits atomically; still, every combination of the chain, its rules
//! and its jumps is recognised as a leftover ([`split`]) and removed ([`teardown`]).

use crate::chains::GUARDRAIL;
use crate::plan::{Position, Table};
use crate::render::restore::Op;

use super::compose::delete_op;
use super::recognise::target;
use super::state::State;

/// The built-in chains that jump to the guardrail, in upstream's order.
const HOOKS: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

/// The protocols the guardrail drops.
const PROTOCOLS: [&str; 2] = ["tcp", "udp"];

/// A guardrail found in a filter table's `-save` state: left by a run killed between arming
/// and disarming it (drift, whatever the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Leftover {
    /// The chain is declared (possibly empty).
    pub declared: bool,
    /// Every rule that jumps (or goes) to it, as `-save` prints it (`-A INPUT -j …`).
    pub jumps: Vec<String>,
}

impl Leftover {
    pub(crate) fn is_empty(&self) -> bool {
        !self.declared && self.jumps.is_empty()
    }
}

/// Whether a raw `-A` line jumps or goes to the guardrail chain.
fn jumps_to_guardrail(line: &str) -> bool {
    target(line) == Some(GUARDRAIL)
}

/// Takes the guardrail out of `state`: the chain and every jump to it go into the returned
/// [`Leftover`], the rest stays. Everything that reasons about Istio's rules (the verdict,
/// resuming, removal, rollback) works on what stays, so a guardrail never counts as a chain of
/// any configuration and never blocks "compatible residues"; it only ever makes a delta.
pub(crate) fn split(mut state: State) -> (State, Leftover) {
    let mut leftover = Leftover::default();
    let Some(chains) = state.tables.get_mut(&Table::Filter) else { return (state, leftover) };
    leftover.declared = chains.remove(GUARDRAIL).is_some();
    for lines in chains.values_mut() {
        leftover.jumps.extend(lines.iter().filter(|line| jumps_to_guardrail(line)).cloned());
        lines.retain(|line| !jumps_to_guardrail(line));
    }
    // A built-in chain has an entry only while it holds a rule (`State`'s invariant).
    chains.retain(|chain, lines| crate::chains::is_istio(chain) || !lines.is_empty());
    (state, leftover)
}

/// The ops that arm the guardrail: the chain and its rules, then the jumps at position 1.
pub(crate) fn arm() -> Vec<Op> {
    let mut ops = vec![Op::NewChain(GUARDRAIL.to_string())];
    ops.extend(PROTOCOLS.iter().map(|proto| Op::Add {
        chain: GUARDRAIL.to_string(),
        position: Position::Append,
        spec: format!("-p {proto} -j DROP"),
    }));
    ops.extend(HOOKS.iter().map(|hook| Op::Add {
        chain: hook.to_string(),
        position: Position::Insert(1),
        spec: format!("-j {GUARDRAIL}"),
    }));
    ops
}

/// The ops that disarm the guardrail this run armed: the jumps, then the chain.
pub(crate) fn disarm() -> Vec<Op> {
    let mut ops: Vec<Op> =
        HOOKS.iter().map(|hook| Op::Delete { chain: hook.to_string(), spec: format!("-j {GUARDRAIL}") }).collect();
    ops.extend([Op::Flush(GUARDRAIL.to_string()), Op::DeleteChain(GUARDRAIL.to_string())]);
    ops
}

/// The ops that remove a leftover: each jump found, then the chain if it is declared. Every op
/// names something `-save` showed, so the block cannot fail on a partial guardrail.
pub(crate) fn teardown(leftover: &Leftover) -> Vec<Op> {
    let mut ops: Vec<Op> = leftover.jumps.iter().filter_map(|line| delete_op(line)).collect();
    if leftover.declared {
        ops.extend([Op::Flush(GUARDRAIL.to_string()), Op::DeleteChain(GUARDRAIL.to_string())]);
    }
    ops
}

/// Whether an op of a restore input writes the guardrail (so a rollback does not count it as
/// one of the run's rules: the guardrail is always torn down on its own).
pub(crate) fn is_guardrail_op(op: &Op) -> bool {
    match op {
        Op::Add { chain, spec, .. } | Op::Delete { chain, spec } | Op::Check { chain, spec } => {
            chain == GUARDRAIL || jumps_to_guardrail(&format!("-A {chain} {spec}"))
        }
        other => other.chain() == GUARDRAIL,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::render::iptables::TokenRule;
    use crate::render::save::Dump;

    /// The armed guardrail as `-save` prints it (written by the one `-save`-form writer).
    pub(crate) fn armed_as_saved() -> String {
        let rules: Vec<TokenRule> = arm()
            .into_iter()
            .filter_map(|op| match op {
                Op::Add { chain, position, spec } => Some(TokenRule {
                    table: Table::Filter,
                    chain: HOOKS.iter().chain([&GUARDRAIL]).find(|c| **c == chain).copied().unwrap_or(GUARDRAIL),
                    position,
                    args: spec.split(' ').map(String::from).collect(),
                }),
                _ => None,
            })
            .collect();
        Dump::after_restore(&rules).render()
    }

    /// A small kernel stand-in for one filter table: applies `ops` as `iptables-restore` would,
    /// failing where the kernel refuses (deleting a missing rule, a chain still referenced or
    /// not empty, declaring an existing chain).
    /// Why the stand-in refused an op, as the kernel would. The fields are read through `Debug`,
    /// in the test's panic message, which the dead-code lint does not count.
    #[derive(Debug)]
    #[allow(dead_code)]
    enum Refusal {
        JumpToMissingChain,
        NoSuchChain(String),
        NoSuchRule(String),
        ChainBusy,
        Refused(String),
    }

    fn apply(chains: &mut BTreeMap<String, Vec<String>>, declared: &mut bool, ops: &[Op]) -> Result<(), Refusal> {
        for op in ops {
            match op {
                Op::NewChain(chain) if !*declared && chain == GUARDRAIL => {
                    *declared = true;
                    chains.insert(chain.clone(), Vec::new());
                }
                Op::Add { spec, .. } if spec == &format!("-j {GUARDRAIL}") && !*declared => {
                    return Err(Refusal::JumpToMissingChain)
                }
                Op::Add { chain, position, spec } if chains.contains_key(chain) || HOOKS.contains(&chain.as_str()) => {
                    let lines = chains.entry(chain.clone()).or_default();
                    let line = format!("-A {chain} {spec}");
                    match position {
                        Position::Append => lines.push(line),
                        Position::Insert(at) => lines.insert((*at as usize - 1).min(lines.len()), line),
                    }
                }
                Op::Delete { chain, spec } => {
                    let lines = chains.get_mut(chain).ok_or_else(|| Refusal::NoSuchChain(chain.clone()))?;
                    let line = format!("-A {chain} {spec}");
                    let at = lines.iter().position(|l| *l == line).ok_or(Refusal::NoSuchRule(line))?;
                    lines.remove(at);
                }
                Op::Flush(chain) if chains.contains_key(chain) => {
                    chains.insert(chain.clone(), Vec::new());
                }
                Op::DeleteChain(chain) if *declared && chain == GUARDRAIL => {
                    let referenced = chains.values().flatten().any(|line| jumps_to_guardrail(line));
                    if referenced || !chains[chain].is_empty() {
                        return Err(Refusal::ChainBusy);
                    }
                    chains.remove(chain);
                    *declared = false;
                }
                other => return Err(Refusal::Refused(other.line())),
            }
        }
        Ok(())
    }

    fn as_state(chains: &BTreeMap<String, Vec<String>>, declared: bool) -> State {
        let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j DROP\n");
        if declared {
            text.push_str(&format!(":{GUARDRAIL} - [0:0]\n"));
        }
        for line in chains.values().flatten() {
            text.push_str(line);
            text.push('\n');
        }
        State::parse(&(text + "COMMIT\n"))
    }

    /// Every state a prefix of arming, or of arming then disarming, can leave (each op taken
    /// alone, as if blocks were not atomic) is found and torn down completely, with ops the
    /// kernel accepts, and the pod's own `-p tcp -j DROP` is never part of it.
    #[test]
    fn every_prefix_of_arming_and_disarming_is_found_and_torn_down() {
        let sequence: Vec<Op> = arm().into_iter().chain(disarm()).collect();
        for k in 0..=sequence.len() {
            let (mut chains, mut declared) = (BTreeMap::new(), false);
            apply(&mut chains, &mut declared, &sequence[..k]).unwrap_or_else(|e| panic!("k={k}: {e:?}"));
            let (rest, leftover) = split(as_state(&chains, declared));
            assert_eq!(leftover.is_empty(), k == 0 || k == sequence.len(), "k={k}: {leftover:?}");
            assert_eq!(
                rest.rules(Table::Filter).collect::<Vec<_>>(),
                vec!["-A INPUT -p tcp -j DROP"],
                "k={k}: the pod's rule stays and nothing of the guardrail does"
            );
            apply(&mut chains, &mut declared, &teardown(&leftover)).unwrap_or_else(|e| panic!("k={k}: {e:?}"));
            assert!(!declared && chains.values().flatten().next().is_none(), "k={k}: {chains:?}");
            // Arming again over the leftover's teardown works (what a reconcile's first block does).
            let (mut chains, mut declared) = (BTreeMap::new(), false);
            apply(&mut chains, &mut declared, &sequence[..k]).unwrap_or_else(|e| panic!("k={k}: {e:?}"));
            let rearm: Vec<Op> = teardown(&leftover).into_iter().chain(arm()).collect();
            apply(&mut chains, &mut declared, &rearm).unwrap_or_else(|e| panic!("k={k}: {e:?}"));
            apply(&mut chains, &mut declared, &disarm()).unwrap_or_else(|e| panic!("k={k}: {e:?}"));
        }
    }

    #[test]
    fn the_armed_guardrail_as_saved_is_one_leftover() {
        let saved = armed_as_saved();
        assert!(saved.contains(&format!(":{GUARDRAIL} - [0:0]\n")) && saved.contains("-A INPUT -j ISTIO_GUARDRAIL\n"));
        let (rest, leftover) = split(State::parse(&saved));
        assert!(!rest.has_entries(), "{rest:?}");
        assert!(leftover.declared && leftover.jumps.len() == 3, "{leftover:?}");
        assert_eq!(
            teardown(&leftover).iter().map(Op::line).collect::<Vec<_>>(),
            [
                "-D FORWARD -j ISTIO_GUARDRAIL",
                "-D INPUT -j ISTIO_GUARDRAIL",
                "-D OUTPUT -j ISTIO_GUARDRAIL",
                "-F ISTIO_GUARDRAIL",
                "-X ISTIO_GUARDRAIL"
            ]
        );
        assert!(arm().iter().chain(&disarm()).all(is_guardrail_op));
        assert!(!is_guardrail_op(&Op::Add {
            chain: "INPUT".into(),
            position: Position::Insert(1),
            spec: "-p tcp -j DROP".into()
        }));
    }
}
