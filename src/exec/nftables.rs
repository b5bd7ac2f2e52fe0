//! Real apply for `--native-nftables`: find and probe `nft`, then feed it the whole transaction
//! on stdin in one `nft -f -` run, which the kernel commits atomically (all or nothing).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::render::nft;

/// Applies the plan or, with `--cleanup-only`, deletes the istio tables. (Routes follow in both
/// cases, as upstream does.)
pub(super) fn apply(config: &Config, plan: &Plan) -> Result<()> {
    // --- netlink hook (issue 9): the default path talks to the kernel itself; `nft -f -` only
    // with ISTIO_NFT_APPLY=nft. To move into the side-effect seam at merge.
    if !config.nft_apply_with_binary {
        return apply_over_netlink(config, plan);
    }
    // --- end of hook
    let nft = Nft::find(std::env::var_os("PATH"), config.cni_mode)?;
    nft.probe()?;
    let text = if config.cleanup_only { nft::cleanup_transaction() } else { nft::apply_transaction(plan) };
    nft.run(&text)?;
    tracing::info!("nftables rules programmed:\n{text} \n");
    Ok(())
}

/// The netlink path: no `nft` program involved (see `crate::nftnl`).
fn apply_over_netlink(config: &Config, plan: &Plan) -> Result<()> {
    let failed = |err: crate::nftnl::NftnlError| Error::Apply(format!("native nftables apply failed: {err}"));
    if config.cleanup_only {
        crate::nftnl::cleanup().map_err(failed)?;
        tracing::info!("nftables istio tables removed (netlink)");
        return Ok(());
    }
    match crate::nftnl::apply(plan, &crate::nftnl::Options::default()).map_err(failed)? {
        crate::nftnl::Outcome::Unchanged => tracing::info!("nftables rules already in place, nothing changed"),
        crate::nftnl::Outcome::Replaced => {
            // The same ruleset as this transaction (only existing tables are deleted over netlink).
            tracing::info!("nftables rules programmed over netlink, as nft text:\n{} \n", nft::apply_transaction(plan));
        }
    }
    Ok(())
}

/// The `nft` binary to run.
#[derive(Debug)]
struct Nft {
    path: PathBuf,
}

impl Nft {
    /// Looks `nft` up in `search_path` (`$PATH`) as Go's `exec.LookPath` does: the first
    /// regular, executable file named `nft` in the listed directories.
    fn find(search_path: Option<OsString>, cni_mode: bool) -> Result<Nft> {
        let dirs = search_path.unwrap_or_default();
        let found = std::env::split_paths(&dirs)
            .map(|dir| if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir })
            .map(|dir| dir.join("nft"))
            .find(|candidate| is_executable(candidate));
        let Some(path) = found else {
            let (place, image) = if cni_mode {
                ("on the host filesystem", "the node")
            } else {
                ("in the sidecar container image", "the image")
            };
            // Upstream's text first (logs are searched for it), then what to do about it (#57978).
            return Err(Error::Apply(format!(
                "nativeNftables is enabled, but the nft binary is missing {place}: could not find nftables binary: \
                 exec: \"nft\": executable file not found in $PATH; install the nftables package \
                 (nft v1.0.1 or later) in {image}, or run without --native-nftables"
            )));
        };
        Ok(Nft { path })
    }

    /// Upstream's (knftables') checks: a usable version, and that nft may talk to the kernel
    /// (a `--check` run changes nothing but fails without CAP_NET_ADMIN or nf_tables).
    fn probe(&self) -> Result<()> {
        let output = self.output(&["--version"], None)?;
        let version = String::from_utf8_lossy(&output.stdout);
        check_version(&version)?;
        let output = self.output(&["--check", "-f", "-"], Some("add table inet test\n"))?;
        if !output.status.success() {
            return Err(Error::Apply(format!("could not run nftables command: {}", failure_text(&output))));
        }
        Ok(())
    }

    fn run(&self, transaction: &str) -> Result<()> {
        let output = self.output(&["-f", "-"], Some(transaction))?;
        if !output.status.success() {
            return Err(Error::Apply(format!("nftables run failed: {}", failure_text(&output))));
        }
        Ok(())
    }

    fn output(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let spawn_error = |err: std::io::Error| {
            Error::Apply(format!("could not run nftables command: {} {}: {err}", self.path.display(), args.join(" ")))
        };
        let child = Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        super::process::feed_and_wait(child, stdin).map_err(spawn_error)
    }
}

/// knftables refuses versions before 1.0.1 (older nft mishandles parts of the syntax used).
fn check_version(version_output: &str) -> Result<()> {
    if version_output.starts_with("nftables v0.") || version_output.starts_with("nftables v1.0.0 ") {
        return Err(Error::Apply(format!("nft version must be v1.0.1 or later (got {})", version_output.trim())));
    }
    Ok(())
}

/// nft's whole stderr (errors come with the offending line and caret markers); the exit status
/// when it printed nothing, e.g. when killed.
fn failure_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.trim().is_empty() {
        output.status.to_string()
    } else {
        stderr.into_owned()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_nft_names_upstreams_error_and_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = Nft::find(Some(empty.path().as_os_str().to_owned()), false).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "nativeNftables is enabled, but the nft binary is missing in the sidecar container image: \
                 could not find nftables binary: exec: \"nft\": executable file not found in $PATH"
            ),
            "{text}"
        );
        assert!(text.contains("install the nftables package"), "{text}");

        let err = Nft::find(None, true).unwrap_err().to_string();
        assert!(err.starts_with("nativeNftables is enabled, but the nft binary is missing on the host filesystem: "));
    }

    #[test]
    fn nft_is_found_only_as_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nft = dir.path().join("nft");
        std::fs::write(&nft, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o644)).unwrap();
        let search = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert!(Nft::find(Some(search.clone()), false).is_err());
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(Nft::find(Some(search), false).unwrap().path, nft);
    }

    #[test]
    fn versions_before_1_0_1_are_refused() {
        assert!(check_version("nftables v1.0.6 (Lester Gooch #5)\n").is_ok());
        assert!(check_version("nftables v1.0.1 (Fearless Fosdick #3)\n").is_ok());
        let err = check_version("nftables v1.0.0 (Fearless Fosdick #2)\n").unwrap_err().to_string();
        assert_eq!(err, "nft version must be v1.0.1 or later (got nftables v1.0.0 (Fearless Fosdick #2))");
        assert!(check_version("nftables v0.9.8 (E.D.S.)\n").is_err());
    }

    #[test]
    fn a_failing_run_reports_nfts_stderr() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nft = dir.path().join("nft");
        std::fs::write(&nft, "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Nft { path: nft }.run("add table inet x\n").unwrap_err();
        assert_eq!(err.to_string(), "nftables run failed: Error: Could not process rule\n");
        assert_eq!(err.exit_code(), 1);
    }
}
