//! Follows a packet hook by hook, table by table, chain by chain, as the kernel would.
//!
//! Tables run at a hook in priority order: raw (-300), then conntrack, mangle (-150), nat
//! (-100); the nft tables use the same priorities. Only a connection's first packet traverses
//! nat, and a locally generated packet has its NAT settled at OUTPUT, so when it loops back in
//! on `lo` its PREROUTING pass skips nat (as `nf_nat_inet_fn` does for an initialized
//! binding) while raw and mangle see it again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::matching::{evaluate, Action, OwnerIds, PacketState};
use super::ruleset::Ruleset;
use crate::plan::{Chain, Table, Verdict};

/// One step of the packet's path, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A hook the packet meets, with why it meets it.
    Hook { name: &'static str, why: String },
    /// A rule that matched.
    Matched { table: &'static str, chain: &'static str, rule: String },
    /// Something the kernel did between rules (rewrite, reroute, skipped table).
    Note(String),
}

/// Where the connection ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// nat REDIRECT: lands on this local port, original destination kept for SO_ORIGINAL_DST.
    Redirect(u16),
    /// TPROXY: lands on the socket bound to this port, the destination left as it was.
    Tproxy(u16),
    /// Not captured: goes on to its (unchanged) destination.
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub steps: Vec<Step>,
    pub fate: Fate,
    pub ct_zone: Option<u16>,
    /// The packet as it leaves the rules (destination after any REDIRECT).
    pub last: PacketState,
}

/// How a table's traversal, or a whole hook, ended.
enum End {
    Accept,
    Drop,
    Redirect(u16),
    Tproxy(u16),
}

/// The rules, the owner-id lookup and the TPROXY routing a run installs.
pub struct Walker<'a> {
    pub rules: &'a Ruleset<'a>,
    pub ids: &'a dyn OwnerIds,
    /// `ip rule fwmark M lookup T` + `local default dev lo`: a packet with this mark is routed to
    /// `lo` (installed by TPROXY runs that capture inbound ports).
    pub tproxy_route_mark: Option<u32>,
}

impl Walker<'_> {
    /// A packet sent by a local socket: OUTPUT, then PREROUTING again if it is routed to `lo`.
    pub fn outbound(&self, mut packet: PacketState) -> Trace {
        let mut steps = vec![Step::Hook {
            name: "OUTPUT",
            why: format!("sent by a local socket, routed out {}", packet.oif.as_deref().unwrap_or("?")),
        }];
        let mut redirected = None;
        let end = self.hook(&mut packet, &mut steps, Chain::Output, true, |packet, steps, table| {
            // The mangle OUTPUT chain reroutes when it changes the mark.
            if table == Table::Mangle && self.tproxy_route_mark.is_some_and(|m| m == packet.mark) {
                if packet.oif.as_deref() != Some("lo") {
                    steps.push(Step::Note(format!("mark {} routes the packet to lo (TPROXY route)", packet.mark)));
                }
                packet.oif = Some("lo".to_string());
            }
        });
        match end {
            End::Drop => return finish(steps, Fate::Drop, packet),
            End::Tproxy(port) => return finish(steps, Fate::Tproxy(port), packet),
            End::Redirect(port) => {
                // REDIRECT at OUTPUT rewrites to the loopback address of the family.
                packet.dst = match packet.dst {
                    IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                };
                packet.dport = port;
                packet.oif = Some("lo".to_string());
                steps.push(Step::Note(format!("destination rewritten to {}, routed out lo", sock(&packet))));
                redirected = Some(port);
            }
            End::Accept => {}
        }
        if packet.oif.as_deref() != Some("lo") {
            return finish(steps, Fate::Accept, packet);
        }
        // Looped back: the same packet comes in on lo, without its socket owner.
        packet.iif = Some("lo".to_string());
        packet.oif = None;
        packet.owner = None;
        steps.push(Step::Hook { name: "PREROUTING", why: "looped back in on lo".to_string() });
        let end = self.hook(&mut packet, &mut steps, Chain::Prerouting, false, |_, _, _| {});
        let fate = match (end, redirected) {
            (End::Drop, _) => Fate::Drop,
            (End::Tproxy(port), _) => Fate::Tproxy(port),
            (_, Some(port)) | (End::Redirect(port), None) => Fate::Redirect(port),
            (End::Accept, None) => Fate::Accept,
        };
        finish(steps, fate, packet)
    }

    /// A packet arriving on an interface: PREROUTING, then local delivery.
    pub fn inbound(&self, mut packet: PacketState) -> Trace {
        let mut steps = vec![Step::Hook {
            name: "PREROUTING",
            why: format!("arrived on {}", packet.iif.as_deref().unwrap_or("?")),
        }];
        let end = self.hook(&mut packet, &mut steps, Chain::Prerouting, true, |_, _, _| {});
        let fate = match end {
            End::Drop => Fate::Drop,
            End::Tproxy(port) => Fate::Tproxy(port),
            End::Redirect(port) => {
                packet.dport = port;
                Fate::Redirect(port)
            }
            End::Accept => Fate::Accept,
        };
        finish(steps, fate, packet)
    }

    /// Runs the tables of one hook in priority order. `nat` is false when the connection's NAT
    /// is already settled; `after_table` lets the caller model what the kernel does between
    /// tables (rerouting).
    fn hook(
        &self,
        packet: &mut PacketState,
        steps: &mut Vec<Step>,
        base: Chain,
        nat: bool,
        after_table: impl Fn(&mut PacketState, &mut Vec<Step>, Table),
    ) -> End {
        let mut tproxied = None;
        for table in [Table::Raw, Table::Mangle, Table::Nat] {
            if table == Table::Mangle {
                packet.tracked = true;
            }
            if table == Table::Nat && !nat {
                if !self.rules.chain(table, base).is_empty() {
                    steps.push(Step::Note(format!(
                        "{} {} is not consulted: this connection's NAT was settled when it left",
                        self.rules.table_name(table),
                        self.rules.chain_name(base)
                    )));
                }
                continue;
            }
            match self.table(packet, steps, table, base) {
                End::Drop => return End::Drop,
                End::Redirect(port) => return End::Redirect(port),
                End::Tproxy(port) => tproxied = Some(port),
                End::Accept => {}
            }
            after_table(packet, steps, table);
        }
        tproxied.map_or(End::Accept, End::Tproxy)
    }

    /// One table's base chain with its jumps and returns; the end of a base chain is its
    /// ACCEPT policy.
    fn table(&self, packet: &mut PacketState, steps: &mut Vec<Step>, table: Table, base: Chain) -> End {
        let mut stack: Vec<(Chain, usize)> = vec![(base, 0)];
        while let Some((chain, at)) = stack.pop() {
            let rules = self.rules.chain(table, chain);
            let Some(entry) = rules.get(at) else {
                continue; // fell off the end: back to the caller chain (or the policy)
            };
            stack.push((chain, at + 1));
            let Some(action) = evaluate(entry.rule, packet, self.ids) else {
                continue;
            };
            steps.push(Step::Matched {
                table: self.rules.table_name(table),
                chain: self.rules.chain_name(chain),
                rule: entry.text.clone(),
            });
            match action {
                Action::Continue => {}
                Action::Verdict(Verdict::Return) => {
                    stack.pop();
                }
                Action::Verdict(Verdict::Jump(target)) => stack.push((target, 0)),
                Action::Verdict(Verdict::Accept) => return End::Accept,
                Action::Verdict(Verdict::Drop) => return End::Drop,
                Action::Redirect(port) => return End::Redirect(port),
                Action::Tproxy { port, mark } => {
                    packet.mark = mark;
                    return End::Tproxy(port);
                }
            }
        }
        End::Accept
    }
}

fn finish(steps: Vec<Step>, fate: Fate, last: PacketState) -> Trace {
    Trace { steps, fate, ct_zone: last.ct_zone, last }
}

pub fn sock(packet: &PacketState) -> String {
    match packet.dst {
        IpAddr::V4(addr) => format!("{addr}:{}", packet.dport),
        IpAddr::V6(addr) => format!("[{addr}]:{}", packet.dport),
    }
}
