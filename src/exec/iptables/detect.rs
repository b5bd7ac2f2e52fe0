//! Which iptables flavour owns a family's rules (`apply.md` §2), decided without writing to
//! the kernel.
//!
//! Upstream probes each candidate by appending and deleting a rule in `nat INPUT`. With legacy
//! that instantiates an (empty) legacy `nat` table, and its "does legacy have rules?" test counts
//! `-save` lines, so the next run in the same namespace picks legacy even though the rules live
//! in nft (upstream #61019). Here each candidate is only *read* with its `-save`: a `-save`
//! that runs is the kernel-support test, legacy wins only if it holds real rules (`-A` lines,
//! as upstream's later fix counts), and the output read for nothing else becomes the state the
//! run starts from, so detection costs no extra process on the common path.
//!
//! Cheaper still, a family with no tables at all needs no `-save`: legacy lists its tables in
//! `/proc/net/ip(6)_tables_names`, and nf_tables answers a netlink table dump. On a fresh pod
//! both are empty, and the first `iptables` process the run starts is the restore.

use crate::config::IptablesBackend;
use crate::error::Error;
use crate::exec::journal::{self, Evidence, IptablesChoice};
use crate::exec::netlink::{self, Message, Socket};
use crate::exec::seam::Netfilter;
use crate::plan::Family;

use super::commands::{CommandError, Tool, Variant, Version};

/// The chosen tool and its `-save` output at detection time.
#[derive(Debug)]
pub(crate) struct Detected {
    pub tool: Tool,
    pub saved: String,
}

fn prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// Whether `-save` output holds at least one rule. Chain headers alone do not count: a table
/// that something merely touched (upstream's probe, a `-L`) is not a ruleset.
pub(crate) fn has_rules(saved: &str) -> bool {
    saved.lines().any(|line| line.starts_with("-A "))
}

/// Detects the tool for `family`, or explains why none works.
pub(crate) fn detect(
    family: Family,
    forced: Option<IptablesBackend>,
    runner: &dyn Netfilter,
) -> Result<Detected, Error> {
    detect_with_evidence(family, forced, runner).map(|(detected, _)| detected)
}

/// [`detect`], also returning the choice and its evidence (which it records in the journal).
pub(crate) fn detect_with_evidence(
    family: Family,
    forced: Option<IptablesBackend>,
    runner: &dyn Netfilter,
) -> Result<(Detected, IptablesChoice), Error> {
    let (mut detected, evidence) = choose(family, forced, runner)?;
    // The lock argument depends on the legacy version. A non-empty dump names it in its header;
    // otherwise ask, which costs a process only for legacy on an empty ruleset.
    let tool = &mut detected.tool;
    if tool.version.is_none() && (tool.variant == Variant::Legacy || tool.program == prefix(family)) {
        ask_version(runner, tool);
    }
    let variant = if tool.variant == Variant::Legacy { "legacy" } else { "nft" };
    let choice = IptablesChoice { family, program: tool.program.clone(), variant, evidence };
    journal::record(|journal| journal.iptables.push(choice.clone()));
    Ok((detected, choice))
}

fn choose(
    family: Family,
    forced: Option<IptablesBackend>,
    runner: &dyn Netfilter,
) -> Result<(Detected, Evidence), Error> {
    let base = prefix(family);
    match forced {
        Some(IptablesBackend::Legacy) => {
            read(runner, family, format!("{base}-legacy"), Variant::Legacy).map(|d| (d, Evidence::Forced))
        }
        Some(IptablesBackend::Nft) => {
            read(runner, family, format!("{base}-nft"), Variant::Nft).map(|d| (d, Evidence::Forced))
        }
        None => {
            let mut failures = Vec::new();
            if runner.lists_no_tables(family, Variant::Legacy) {
                // No legacy table, so no legacy rule: nothing to read.
                return match read(runner, family, format!("{base}-nft"), Variant::Nft) {
                    Ok(nft) => Ok((nft, Evidence::NoLegacyTables)),
                    Err(nft) => {
                        tracing::debug!("{nft}");
                        plain(runner, family).map(|plain| (plain, Evidence::PlainFallback))
                    }
                };
            }
            match read(runner, family, format!("{base}-legacy"), Variant::Legacy) {
                Ok(legacy) if has_rules(&legacy.saved) => return Ok((legacy, Evidence::LegacyHoldsRules)),
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
            match read(runner, family, format!("{base}-nft"), Variant::Nft) {
                Ok(nft) => return Ok((nft, Evidence::LegacyHasNoRules)),
                Err(e) => failures.push(e),
            }
            for failure in &failures {
                tracing::debug!("{failure}");
            }
            plain(runner, family).map(|plain| (plain, Evidence::PlainFallback))
        }
    }
}

/// Last resort, as upstream: whatever the distribution's `iptables` points to. Its variant is
/// settled by `--version` (legacy until then), so its state is always read.
fn plain(runner: &dyn Netfilter, family: Family) -> Result<Detected, Error> {
    let tool = Tool { family, program: prefix(family).to_string(), variant: Variant::Legacy, version: None };
    let saved = runner.save(&tool).map_err(|e| unusable(&tool, e))?;
    Ok(Detected { tool, saved })
}

/// Reads `program-save`; the version comes from the dump's header when there is one. A
/// variant with no table in this namespace is empty without asking, provided its programs
/// are installed.
fn read(runner: &dyn Netfilter, family: Family, program: String, variant: Variant) -> Result<Detected, Error> {
    let mut tool = Tool { family, program, variant, version: None };
    if runner.lists_no_tables(family, variant)
        && runner.installed(&tool.restore_program())
        && runner.installed(&tool.save_program())
    {
        return Ok(Detected { tool, saved: String::new() });
    }
    let saved = runner.save(&tool).map_err(|e| unusable(&tool, e))?;
    tool.version = Version::find_in(saved.lines().next().unwrap_or_default());
    Ok(Detected { tool, saved })
}

/// `<program>-save --version`: `iptables-save v1.8.9 (nf_tables)`.
fn ask_version(runner: &dyn Netfilter, tool: &mut Tool) {
    let save = tool.save_program();
    match runner.save_version(tool) {
        Ok(out) => {
            if out.contains("nf_tables") {
                tool.variant = Variant::Nft;
            }
            tool.version = Version::find_in(&out);
            if tool.version.is_none() {
                tracing::warn!("iptables version {:?} is not a valid version string", out.trim());
            }
        }
        Err(e) if e.stderr.contains("unrecognized option") || e.stderr.contains("unknown option") => {
            tracing::warn!(
                binary = tool.program.as_str(),
                "found iptables binary {save}, but it does not appear to support the '--version' flag, assuming very old legacy version"
            );
        }
        Err(e) => tracing::warn!("{save} --version failed, assuming an old legacy version: {}", e.xtables_text()),
    }
}

/// Whether the kernel shows no table at all for this family and variant (so `-save` would
/// print nothing). Any doubt (unreadable, unsupported) answers false, and `-save` decides.
pub(crate) fn kernel_lists_no_tables(family: Family, variant: Variant) -> bool {
    match variant {
        Variant::Legacy => {
            let names = match family {
                Family::V4 => "/proc/net/ip_tables_names",
                Family::V6 => "/proc/net/ip6_tables_names",
            };
            match std::fs::read_to_string(names) {
                Ok(tables) => tables.trim().is_empty(),
                // x_tables not loaded at all: certainly no legacy table.
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            }
        }
        Variant::Nft => {
            let nfproto = match family {
                Family::V4 => 2,
                Family::V6 => 10,
            };
            // struct nfgenmsg: family, version 0, resource id 0.
            let request = Message::new(&[nfproto, 0, 0, 0]);
            let tables = Socket::open_netfilter().and_then(|mut s| s.dump(netlink::NFT_MSG_GETTABLE, &request));
            tables.is_ok_and(|tables| tables.iter().all(|t| t.kind != netlink::NFT_MSG_NEWTABLE))
        }
    }
}

fn unusable(tool: &Tool, source: CommandError) -> Error {
    Error::IptablesUnusable { program: tool.program.clone(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rule_lines_count_as_existing_rules() {
        // What upstream's own probe leaves behind in legacy: headers, no rules.
        let primed = "# Generated by iptables-save v1.8.9 on Sat Nov 21 2026\n*nat\n:PREROUTING ACCEPT [0:0]\n\
                      :INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n# Completed\n";
        assert!(!has_rules(primed));
        assert!(!has_rules(""));
        assert!(has_rules("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"));
    }
}
