//! The netfilter seam: every effect the apply half has on the kernel or the machine, behind one
//! trait. [`System`] does them; the recording fake (`super::fake`) answers from a script and
//! records what it was asked, which is how dry-runs and the unit tests run the real flow.

use std::cell::OnceCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::nftnl::{NftnlError, Outcome as NftOutcome};
use crate::plan::{Family, Plan};

use super::check::Drift;
use super::iptables::{CommandError, Runner, Tool, Variant};
use super::route_state::{RouteReadError, TproxyRouting};
use super::routes::{self, RouteError};

/// What a program printed, and whether it succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProgramOutput {
    pub success: bool,
    /// The exit status as the standard library prints it (`exit status: 1`).
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Everything that touches netfilter, routing or the programs that do.
pub(crate) trait Netfilter {
    /// `<tool>-save`: the family's rules as iptables prints them.
    fn save(&self, tool: &Tool) -> Result<String, CommandError>;
    /// `<tool>-restore --noflush` with `input` on stdin (each table commits atomically).
    fn restore(&self, tool: &Tool, input: &str) -> Result<(), CommandError>;
    /// `<tool>-save --version`, the probe that names the variant and the lock a tool needs.
    fn save_version(&self, tool: &Tool) -> Result<String, CommandError>;
    /// Whether the kernel lists no table of `variant` for `family`; false when in doubt.
    fn lists_no_tables(&self, family: Family, variant: Variant) -> bool;
    /// Whether `program` is installed where spawning it would find it.
    fn installed(&self, program: &str) -> bool;
    /// Fails, naming the capability and the fix, when this process cannot change rules with
    /// `variant` (iptables-legacy needs `CAP_NET_RAW`). A fake can drive any variant.
    fn can_change_with(&self, _variant: Variant) -> Result<()> {
        Ok(())
    }

    /// `nft args…` with `stdin`: `--version`, `--check -f -` (a probe) and `-f -` (the commit).
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<ProgramOutput>;

    /// Makes the kernel's `inet istio-proxy-*` tables those of `plan` in one nf_tables netlink
    /// batch, unless they already are (the default `--native-nftables` path; no `nft` needed).
    fn nftables_commit(&self, plan: &Plan) -> Result<NftOutcome, NftnlError>;
    /// Deletes the `inet istio-proxy-*` tables over netlink (`--cleanup-only`).
    fn nftables_delete(&self) -> Result<(), NftnlError>;
    /// How the `inet istio-proxy-*` tables differ from those of `plan` (`check`; read-only).
    fn nftables_differences(&self, plan: &Plan) -> Result<Vec<Drift>, NftnlError>;

    /// `::6/128` on `lo` (IPv6's inbound passthrough source); present already is fine.
    fn add_loopback_passthrough_address(&self) -> Result<(), RouteError>;
    /// `ip rule add fwmark MARK lookup TABLE`, unless an equivalent rule exists.
    fn ensure_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError>;
    /// `ip route add local default dev lo table TABLE`; present already is fine.
    fn add_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError>;
    /// `ip rule del fwmark MARK lookup TABLE`, every such rule; none is fine.
    fn remove_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError>;
    /// `ip route del local default dev lo table TABLE`; absent is fine.
    fn remove_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError>;
    /// Whether the mark rule and the local route above exist (`check`; read-only).
    fn tproxy_routing(&self, family: Family, mark: u32, table: u32) -> Result<TproxyRouting, RouteReadError>;
}

/// The real machine: programs from `PATH`, netlink in the current network namespace.
#[derive(Debug, Default)]
pub(crate) struct System {
    runner: Runner,
    /// CNI mode decides which install hint a missing `nft` gets.
    cni_mode: bool,
    nft: OnceCell<Option<PathBuf>>,
}

impl System {
    /// In CNI mode programs run sandboxed, with the lock scoped to the pod's namespace file.
    pub(crate) fn new(cni_mode: bool, pod_lock: Option<PathBuf>, command_timeout: std::time::Duration) -> System {
        System { runner: Runner::new(cni_mode, pod_lock, command_timeout), cni_mode, nft: OnceCell::new() }
    }

    /// A system whose `nft` is `path` (tests run a scripted nft).
    #[cfg(test)]
    pub(crate) fn with_nft(path: PathBuf) -> System {
        System { nft: OnceCell::from(Some(path)), ..System::default() }
    }

    fn nft_path(&self) -> Result<&Path> {
        let found = self.nft.get_or_init(|| find_executable("nft", std::env::var_os("PATH")));
        found.as_deref().ok_or(Error::NftMissing { cni_mode: self.cni_mode })
    }
}

impl Netfilter for System {
    fn can_change_with(&self, variant: Variant) -> Result<()> {
        match variant {
            Variant::Legacy => crate::capabilities::check_for_legacy_this_process(),
            Variant::Nft => Ok(()),
        }
    }

    fn save(&self, tool: &Tool) -> Result<String, CommandError> {
        self.runner.save(tool)
    }

    fn restore(&self, tool: &Tool, input: &str) -> Result<(), CommandError> {
        self.runner.restore(tool, input)
    }

    fn save_version(&self, tool: &Tool) -> Result<String, CommandError> {
        self.runner.run(&tool.save_program(), &["--version"], None, None)
    }

    fn lists_no_tables(&self, family: Family, variant: Variant) -> bool {
        super::iptables::kernel_lists_no_tables(family, variant)
    }

    fn installed(&self, program: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<ProgramOutput> {
        let path = self.nft_path()?;
        let spawn_error = |source: std::io::Error| Error::NftSpawn {
            command: format!("{} {}", path.display(), args.join(" ")),
            source,
        };
        let child = Command::new(path)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        super::journal::record_subprocess(&path.display().to_string(), args);
        let output = super::process::feed_and_wait(child, stdin, self.runner.command_timeout()).map_err(spawn_error)?;
        Ok(ProgramOutput {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn nftables_commit(&self, plan: &Plan) -> Result<NftOutcome, NftnlError> {
        crate::nftnl::apply(plan, &crate::nftnl::Options::default())
    }

    fn nftables_delete(&self) -> Result<(), NftnlError> {
        crate::nftnl::cleanup()
    }

    fn nftables_differences(&self, plan: &Plan) -> Result<Vec<Drift>, NftnlError> {
        let found = crate::nftnl::differences(plan, &crate::nftnl::Options::default())?;
        Ok(found.into_iter().map(|(table, chain, difference)| Drift::nftables(table, chain, difference)).collect())
    }

    fn add_loopback_passthrough_address(&self) -> Result<(), RouteError> {
        routes::netlink_add_passthrough_address()
    }

    fn ensure_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
        routes::netlink_ensure_mark_rule(family, mark, table)
    }

    fn add_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError> {
        routes::netlink_add_local_default_route(family, table)
    }

    fn remove_mark_rule(&self, family: Family, mark: u32, table: u32) -> Result<(), RouteError> {
        routes::netlink_remove_mark_rule(family, mark, table)
    }

    fn remove_local_default_route(&self, family: Family, table: u32) -> Result<(), RouteError> {
        routes::netlink_remove_local_default_route(family, table)
    }

    fn tproxy_routing(&self, family: Family, mark: u32, table: u32) -> Result<TproxyRouting, RouteReadError> {
        super::route_state::read(family, mark, table)
    }
}

/// Looks `program` up in `search_path` (`$PATH`) as Go's `exec.LookPath` does: the first
/// regular, executable file of that name in the listed directories (an empty entry is `.`).
pub(crate) fn find_executable(program: &str, search_path: Option<OsString>) -> Option<PathBuf> {
    let dirs = search_path.unwrap_or_default();
    std::env::split_paths(&dirs)
        .map(|dir| if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir })
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_is_found_only_as_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nft = dir.path().join("nft");
        std::fs::write(&nft, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o644)).unwrap();
        let search = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_executable("nft", Some(search.clone())), None);
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_executable("nft", Some(search)), Some(nft));
    }

    #[test]
    fn missing_nft_names_upstreams_error_and_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let system =
            System { nft: OnceCell::from(find_executable("nft", Some(empty.path().into()))), ..System::default() };
        let err = system.nft(&["--version"], None).unwrap_err();
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
        let err = Error::NftMissing { cni_mode: true }.to_string();
        assert!(err.starts_with("nativeNftables is enabled, but the nft binary is missing on the host filesystem: "));
    }
}
