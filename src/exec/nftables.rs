//! Apply for `--native-nftables`: probe `nft`, then commit the whole transaction in one run,
//! which the kernel applies atomically (all or nothing). It runs through the seam, so a netlink
//! nf_tables backend is one more [`Netfilter`] implementation of `nft` (version, check, commit).

use crate::error::{Error, Result};

use crate::nftnl::Outcome as NftOutcome;
use crate::plan::Plan;
use crate::render::nft;

use super::journal::{self, Action};
use super::seam::{Netfilter, ProgramOutput};

/// Probes `nft` and commits `transaction`: the plan's, or with `--cleanup-only` the deletion of
/// the istio tables. (Routes follow in both cases, as upstream does.)
pub(super) fn apply(netfilter: &dyn Netfilter, transaction: &str) -> Result<()> {
    probe(netfilter)?;
    let output = netfilter.nft(&["-f", "-"], Some(transaction))?;
    if !output.success {
        return Err(Error::NftCommit { output: failure_text(&output) });
    }
    Ok(())
}

/// The default path: the plan (or, with `--cleanup-only`, the deletion of the istio tables)
/// committed over netlink in one atomic batch, with no `nft` program involved.
pub(super) fn apply_over_netlink(netfilter: &dyn Netfilter, plan: &Plan, cleanup_only: bool) -> Result<()> {
    if cleanup_only {
        netfilter.nftables_delete().map_err(Error::NftNetlink)?;
        tracing::info!("nftables istio tables removed (netlink)");
        journal::record_action(Action::CleanedUp);
        return Ok(());
    }
    match netfilter.nftables_commit(plan).map_err(Error::NftNetlink)? {
        NftOutcome::Unchanged => {
            tracing::info!("nftables rules already in place, nothing changed");
            journal::record_action(Action::Unchanged);
        }
        NftOutcome::Replaced => {
            let mut replaced = false;
            journal::record(|journal| replaced = journal.nftables_tables_existed);
            journal::record_action(if replaced { Action::Reconciled } else { Action::Applied });
            // The same ruleset as this transaction (only existing tables are deleted over netlink).
            tracing::info!("nftables rules programmed over netlink, as nft text:\n{} \n", nft::apply_transaction(plan));
        }
    }
    Ok(())
}

/// Upstream's (knftables') checks: a usable version, and that nft may talk to the kernel (a
/// `--check` run changes nothing but fails without CAP_NET_ADMIN or nf_tables).
fn probe(netfilter: &dyn Netfilter) -> Result<()> {
    let output = netfilter.nft(&["--version"], None)?;
    check_version(&output.stdout)?;
    let output = netfilter.nft(&["--check", "-f", "-"], Some("add table inet test\n"))?;
    if !output.success {
        return Err(Error::NftProbe { output: failure_text(&output) });
    }
    Ok(())
}

/// knftables refuses versions before 1.0.1 (older nft mishandles parts of the syntax used).
fn check_version(version_output: &str) -> Result<()> {
    if version_output.starts_with("nftables v0.") || version_output.starts_with("nftables v1.0.0 ") {
        return Err(Error::NftTooOld { version: version_output.trim().to_string() });
    }
    Ok(())
}

/// nft's whole stderr (errors come with the offending line and caret markers); the exit status
/// when it printed nothing, e.g. when killed.
fn failure_text(output: &ProgramOutput) -> String {
    if output.stderr.trim().is_empty() {
        output.status.clone()
    } else {
        output.stderr.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::{Call, FakeNetfilter};

    #[test]
    fn versions_before_1_0_1_are_refused() {
        assert!(check_version("nftables v1.0.6 (Lester Gooch #5)\n").is_ok());
        assert!(check_version("nftables v1.0.1 (Fearless Fosdick #3)\n").is_ok());
        let err = check_version("nftables v1.0.0 (Fearless Fosdick #2)\n").unwrap_err().to_string();
        assert_eq!(err, "nft version must be v1.0.1 or later (got nftables v1.0.0 (Fearless Fosdick #2))");
        assert!(check_version("nftables v0.9.8 (E.D.S.)\n").is_err());
    }

    #[test]
    fn probes_then_commits_the_transaction() {
        let fake = FakeNetfilter::default();
        apply(&fake, "add table inet x\n").unwrap();
        let commits: Vec<Call> = fake.calls().into_iter().filter(|c| matches!(c, Call::Nft { .. })).collect();
        assert_eq!(commits.len(), 3, "{commits:?}");
        assert_eq!(
            commits[2],
            Call::Nft { args: "-f -".into(), stdin: Some("add table inet x\n".into()) },
            "the transaction comes last, after the version and --check probes"
        );
    }

    #[test]
    fn a_failing_run_reports_nfts_stderr() {
        let fake = FakeNetfilter::default();
        fake.fail_nft_commit("Error: Could not process rule\n");
        let err = apply(&fake, "add table inet x\n").unwrap_err();
        assert_eq!(err.to_string(), "nftables run failed: Error: Could not process rule\n");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_real_failing_nft_is_reported_with_its_stderr() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nft = dir.path().join("nft");
        std::fs::write(&nft, "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        let system = crate::exec::seam::System::with_nft(nft);
        let output = system.nft(&["-f", "-"], Some("add table inet x\n")).unwrap();
        assert!(!output.success);
        assert_eq!(failure_text(&output), "Error: Could not process rule\n");
    }
}
