//! The capabilities a real apply needs, checked once up front. Without `CAP_NET_ADMIN` every
//! `-save`, restore and netlink request fails with EPERM, which the backend detection used to
//! report as "no working kernel support" (twice), sending people to the wrong fix.

use crate::error::{Error, Result};

/// `CAP_NET_ADMIN` and `CAP_NET_RAW` (linux/capability.h).
const NET_ADMIN: u32 = 12;
const NET_RAW: u32 = 13;

/// The effective capability set from `/proc/self/status` text (`CapEff:` in hex).
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Fails when `status` shows no `CAP_NET_ADMIN`. A missing `CAP_NET_RAW` alone is decided once
/// the backend is known ([`check_for_legacy`]): iptables-nft and netlink do without it. An
/// unreadable status decides nothing: the programs will say what is wrong.
pub(crate) fn check(status: &str) -> Result<()> {
    let Some(effective) = effective(status) else { return Ok(()) };
    let has = |bit: u32| effective & (1 << bit) != 0;
    let missing: Vec<&str> = [(NET_ADMIN, "CAP_NET_ADMIN"), (NET_RAW, "CAP_NET_RAW")]
        .iter()
        .filter(|(bit, _)| !has(*bit))
        .map(|(_, name)| *name)
        .collect();
    if !has(NET_ADMIN) {
        return Err(Error::MissingCapabilities { missing: missing.join(" and ") });
    }
    Ok(())
}

/// Fails when `status` shows no `CAP_NET_RAW`, for a run that drives iptables-legacy: it opens a
/// raw socket per table, and without the capability every change fails with the cryptic
/// "can't initialize iptables table `nat'" / "unable to initialize table 'nat'" while `-save`
/// still succeeds (so detection alone does not notice).
pub(crate) fn check_for_legacy(status: &str) -> Result<()> {
    match effective(status) {
        Some(effective) if effective & (1 << NET_RAW) == 0 => Err(Error::MissingCapabilities {
            missing: "CAP_NET_RAW (iptables-legacy, the backend in use, needs it)".into(),
        }),
        _ => Ok(()),
    }
}

/// [`check`] on this process.
pub(crate) fn check_this_process() -> Result<()> {
    this_process_status().map_or(Ok(()), |status| check(&status))
}

/// [`check_for_legacy`] on this process.
pub(crate) fn check_for_legacy_this_process() -> Result<()> {
    this_process_status().map_or(Ok(()), |status| check_for_legacy(&status))
}

fn this_process_status() -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .map_err(|e| tracing::debug!("cannot read /proc/self/status to check capabilities: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_required_and_named_with_the_fix() {
        assert!(check("Name:\tx\nCapEff:\t000001ffffffffff\n").is_ok());
        assert!(check("CapEff:\t0000000000001000\n").is_ok(), "NET_RAW alone is decided with the backend");
        assert!(check("no such line\n").is_ok());
        let err = check("CapEff:\t0000000000000000\n").unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(text.contains("CAP_NET_ADMIN and CAP_NET_RAW"), "{text}");
        assert!(text.contains("capabilities:") && text.contains("NET_ADMIN"), "{text}");
        let text = check("CapEff:\t0000000000002000\n").unwrap_err().to_string();
        assert!(text.starts_with("missing CAP_NET_ADMIN:"), "{text}");
    }

    #[test]
    fn net_raw_is_required_for_iptables_legacy_and_named_with_the_fix() {
        assert!(check_for_legacy("CapEff:\t0000000000003000\n").is_ok());
        assert!(check_for_legacy("no such line\n").is_ok());
        let err = check_for_legacy("Name:\tx\nCapEff:\t0000000000001000\n").unwrap_err();
        assert_eq!(err.exit_code(), 1);
        let text = err.to_string();
        assert!(text.starts_with("missing CAP_NET_RAW (iptables-legacy"), "{text}");
        assert!(text.contains("capabilities: add: [NET_ADMIN, NET_RAW]"), "{text}");
    }
}
