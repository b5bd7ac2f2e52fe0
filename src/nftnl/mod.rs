//! `--native-nftables` without the `nft` program: the istio tables are encoded from the typed
//! plan into nf_tables netlink messages and committed in one atomic batch.
//!
//! Why an encoder of our own rather than `netlink-packet-netfilter`: that crate's nf_tables
//! support (0.3) covers tables, chains and a handful of expressions, not `redir`, `tproxy`,
//! `ct` set, `range`, `lookup` or sets, and it would pull in the `netlink-packet-*` stack for a
//! few fixed-layout messages. Like `src/exec/netlink.rs`, this speaks the protocol on nix's
//! netlink sockets; `rustables` (GPL-3) and libnftnl (C) are not options.
//!
//! * [`apply`]: read the istio tables back; if they already are what the plan calls for, change
//!   nothing (counters survive), otherwise replace them all in one batch.
//! * [`cleanup`]: delete the istio tables (`--cleanup-only`).
//! * Every message of a batch is acknowledged; a refused batch changes nothing, and the refusal is
//!   mapped back to the table, chain or rule with a hint at the kernel feature it needs.

mod expr;
mod ids;
mod readback;
mod ruleset;
mod wire;

use std::path::PathBuf;

use nix::errno::Errno;

pub use ids::UnknownName;
pub use wire::WireError;

use crate::plan::Plan;
use ruleset::{BaseChain, Subject};
use wire::{Socket, NFPROTO_INET};

/// Where the run's environment differs from the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory holding `passwd` and `group` (owner names are resolved there).
    pub etc: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options { etc: PathBuf::from("/etc") }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel already had exactly these tables; nothing was sent.
    Unchanged,
    /// One batch replaced the istio tables.
    Replaced,
}

#[derive(Debug, thiserror::Error)]
pub enum NftnlError {
    #[error("cannot resolve a rule's owner: {0}")]
    Owner(#[source] UnknownName),
    #[error("nftables over netlink: {0}")]
    Wire(#[source] WireError),
    #[error("the kernel refused the nftables batch, nothing was changed: {message}")]
    Refused {
        message: String,
        #[source]
        errno: Errno,
    },
}

/// Makes the kernel's istio tables those of `plan`, unless they already are.
pub fn apply(plan: &Plan, options: &Options) -> Result<Outcome, NftnlError> {
    let tables = ruleset::desired(plan, &mut ids::IdResolver::new(&options.etc)).map_err(NftnlError::Owner)?;
    let mut socket = Socket::open().map_err(NftnlError::Wire)?;
    // A second attempt only when an istio table appeared between read-back and commit.
    for attempt in 1..=2 {
        let present = readback::present_tables(&mut socket).map_err(NftnlError::Wire)?;
        if readback::matches(&mut socket, &tables, &present).map_err(NftnlError::Wire)? {
            return Ok(Outcome::Unchanged);
        }
        let names: Vec<&'static str> = present.iter().map(|t| t.name).collect();
        let existed = !names.is_empty();
        crate::exec::journal::record(|journal| journal.nftables_tables_existed = existed);
        match commit(&mut socket, ruleset::batch(&tables, &names)) {
            Err(NftnlError::Refused { errno: Errno::EEXIST, .. }) if attempt == 1 => continue,
            result => return result.map(|()| Outcome::Replaced),
        }
    }
    Ok(Outcome::Replaced)
}

/// Whether the kernel's istio tables already are those of `plan` (read-back only).
pub fn matches(plan: &Plan, options: &Options) -> Result<bool, NftnlError> {
    let tables = ruleset::desired(plan, &mut ids::IdResolver::new(&options.etc)).map_err(NftnlError::Owner)?;
    let mut socket = Socket::open().map_err(NftnlError::Wire)?;
    let present = readback::present_tables(&mut socket).map_err(NftnlError::Wire)?;
    readback::matches(&mut socket, &tables, &present).map_err(NftnlError::Wire)
}

/// How the kernel's istio tables differ from those of `plan` (read-back only), as
/// (table, chain, difference); empty when they match.
pub(crate) fn differences(
    plan: &Plan,
    options: &Options,
) -> Result<Vec<(String, String, crate::exec::check::Difference)>, NftnlError> {
    let tables = ruleset::desired(plan, &mut ids::IdResolver::new(&options.etc)).map_err(NftnlError::Owner)?;
    let mut socket = Socket::open().map_err(NftnlError::Wire)?;
    let present = readback::present_tables(&mut socket).map_err(NftnlError::Wire)?;
    readback::differences(&mut socket, &tables, &present).map_err(NftnlError::Wire)
}

/// Deletes the istio tables that exist, in one batch (none: nothing is sent).
pub fn cleanup() -> Result<(), NftnlError> {
    let mut socket = Socket::open().map_err(NftnlError::Wire)?;
    let present = readback::present_tables(&mut socket).map_err(NftnlError::Wire)?;
    let names: Vec<&'static str> = present.iter().map(|t| t.name).collect();
    if names.is_empty() {
        return Ok(());
    }
    commit(&mut socket, ruleset::delete_tables(&names))
}

fn commit(socket: &mut Socket, batch: Vec<(wire::Request, Subject)>) -> Result<(), NftnlError> {
    let (requests, subjects): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let refusals = socket.batch(NFPROTO_INET, &requests).map_err(|err| match err {
        WireError::Batch(errno) => NftnlError::Refused { message: batch_hint(errno).to_string(), errno },
        other => NftnlError::Wire(other),
    })?;
    let Some(first) = refusals.first() else { return Ok(()) };
    let subject = &subjects[first.index];
    let mut message = format!("{} ({})", describe(subject), first.errno.desc());
    if let Some(hint) = hint(subject, first.errno) {
        message.push_str(": ");
        message.push_str(hint);
    }
    if refusals.len() > 1 {
        message.push_str(&format!(" (and {} more refused message(s))", refusals.len() - 1));
    }
    Err(NftnlError::Refused { message, errno: first.errno })
}

fn batch_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => "the process lacks CAP_NET_ADMIN in this network namespace",
        Errno::EPROTONOSUPPORT | Errno::EOPNOTSUPP => {
            "the kernel has no nf_tables (CONFIG_NF_TABLES / module nf_tables)"
        }
        _ => "the batch was not accepted",
    }
}

fn describe(subject: &Subject) -> String {
    match subject {
        Subject::Table { table, delete: false } => format!("add table inet {table}"),
        Subject::Table { table, delete: true } => format!("delete table inet {table}"),
        Subject::Chain { table, chain, base: Some(base) } => format!(
            "add chain inet {table} {chain} {{ type {} hook {} priority {} ; }}",
            base.kind,
            if base.hook == 0 { "prerouting" } else { "output" },
            base.priority
        ),
        Subject::Chain { table, chain, base: None } => format!("add chain inet {table} {chain}"),
        Subject::Rule { table, chain, index, text, .. } => {
            format!("rule {} of chain {chain} in table inet {table} `{text}`", index + 1)
        }
    }
}

/// What the kernel most likely lacks, from the refused object and errno. A missing expression
/// or chain type shows as ENOENT (its module could not be loaded) or EOPNOTSUPP.
fn hint(subject: &Subject, errno: Errno) -> Option<&'static str> {
    let missing = matches!(errno, Errno::ENOENT | Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT);
    match subject {
        Subject::Table { .. } if errno == Errno::EPERM => Some(
            "another process owns this table (NFT_TABLE_F_OWNER, e.g. a node agent) or this one lacks CAP_NET_ADMIN",
        ),
        _ if errno == Errno::EPERM => Some("the process lacks CAP_NET_ADMIN in this network namespace"),
        Subject::Table { .. } if missing => Some("the kernel lacks the nf_tables inet family (CONFIG_NF_TABLES_INET)"),
        Subject::Chain { base: Some(BaseChain { kind: "nat", .. }), .. } if missing => {
            Some("the kernel lacks nat chains (module nft_chain_nat, CONFIG_NFT_NAT)")
        }
        Subject::Chain { base: Some(BaseChain { kind: "route", .. }), .. } if missing => {
            Some("the kernel lacks route chains (CONFIG_NF_TABLES_INET with nft_chain_route)")
        }
        Subject::Rule { exprs, text, .. } if missing => {
            if exprs.contains(&"redir") {
                Some("the kernel lacks nft_redir (CONFIG_NFT_REDIR); load the nft_redir module on the node")
            } else if exprs.contains(&"tproxy") {
                Some("the kernel lacks nft_tproxy (CONFIG_NFT_TPROXY); load the nft_tproxy module on the node")
            } else if text.contains("ct zone") {
                Some("the kernel lacks conntrack zones (CONFIG_NF_CONNTRACK_ZONES) for `ct zone set`")
            } else if exprs.contains(&"ct") {
                Some("the kernel lacks nft_ct (CONFIG_NFT_CT)")
            } else if exprs.contains(&"lookup") {
                Some("the kernel lacks nf_tables sets (CONFIG_NF_TABLES_SET / nft_set_hash)")
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(exprs: &[&'static str], text: &str) -> Subject {
        Subject::Rule {
            table: "istio-proxy-nat",
            chain: "istio-redirect",
            index: 0,
            text: text.into(),
            exprs: exprs.to_vec(),
        }
    }

    #[test]
    fn refusals_name_the_missing_kernel_feature() {
        let redirect =
            rule(&["meta", "cmp", "counter", "immediate", "redir"], "meta l4proto tcp counter redirect to :15001");
        assert!(hint(&redirect, Errno::ENOENT).unwrap().contains("nft_redir"));
        assert!(hint(&rule(&["tproxy"], "tproxy ip to :15006"), Errno::EOPNOTSUPP).unwrap().contains("nft_tproxy"));
        assert!(hint(&rule(&["ct"], "udp dport 53 counter ct zone set 1"), Errno::EOPNOTSUPP)
            .unwrap()
            .contains("conntrack zones"));
        let table = Subject::Table { table: "istio-proxy-nat", delete: false };
        assert!(hint(&table, Errno::EAFNOSUPPORT).unwrap().contains("inet family"));
        assert_eq!(hint(&redirect, Errno::EINVAL), None);
        assert_eq!(
            describe(&redirect),
            "rule 1 of chain istio-redirect in table inet istio-proxy-nat `meta l4proto tcp counter redirect to :15001`"
        );
    }
}
