//! CNI mode (`apply.md` §2.6): every iptables command runs in a mount namespace of its own,
//! where `/etc/nsswitch.conf` reads as empty so `-m owner` never waits on an NSS service of the
//! node (LDAP, sssd), and where legacy iptables older than 1.8.6 (which ignores
//! `XTABLES_LOCKFILE`) finds the pod's namespace file at `/run/xtables.lock`, so pods set up in
//! parallel do not queue on one node-wide lock.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::ptr;

use nix::libc;

/// Arranges for `command` to enter its sandbox between fork and exec; `lock` is bind-mounted
/// over `/run/xtables.lock` when given.
pub(crate) fn confine(command: &mut Command, lock: Option<&Path>) -> io::Result<()> {
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    // Built before fork: the child may only make raw syscalls (no allocation).
    let root = cstring(b"/")?;
    let dev_null = cstring(b"/dev/null")?;
    let nsswitch = cstring(b"/etc/nsswitch.conf")?;
    let lock_target = cstring(b"/run/xtables.lock")?;
    let lock_source = lock.map(|path| cstring(path.as_os_str().as_bytes())).transpose()?;
    let bind = |source: &CString, target: &CString| {
        // SAFETY: both pointers are NUL-terminated strings that outlive the call.
        check(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), ptr::null(), libc::MS_BIND, ptr::null()) })
    };
    let propagation = move |flags: libc::c_ulong| {
        // SAFETY: `root` is a NUL-terminated string; the other arguments may be null.
        check(unsafe { libc::mount(ptr::null(), root.as_ptr(), ptr::null(), libc::MS_REC | flags, ptr::null()) })
    };
    // SAFETY: the hook only makes raw syscalls on data prepared above.
    unsafe {
        command.pre_exec(move || {
            let setup = || -> io::Result<()> {
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Keep the mounts below out of the node's namespace; some hosts refuse private.
                propagation(libc::MS_PRIVATE).or_else(|_| propagation(libc::MS_SLAVE))?;
                bind(&dev_null, &nsswitch)?;
                if let Some(source) = &lock_source {
                    bind(source, &lock_target)?;
                }
                Ok(())
            };
            // std reports a hook error to the parent as its bare errno, just like a failed exec;
            // the offset tells the two apart (see `hook_failure`).
            setup()
                .map_err(|e| io::Error::from_raw_os_error(HOOK_ERRNO_BASE + e.raw_os_error().unwrap_or(libc::EINVAL)))
        });
    }
    Ok(())
}

/// Added to the errno of a failed sandbox step, which no real errno reaches.
const HOOK_ERRNO_BASE: i32 = 1 << 16;

/// The sandbox step's own error, when a spawn failed in the hook rather than in exec (a missing
/// program is `ENOENT` from exec, and no reason to retry without the sandbox).
pub(crate) fn hook_failure(e: &io::Error) -> Option<io::Error> {
    e.raw_os_error()
        .filter(|errno| *errno >= HOOK_ERRNO_BASE)
        .map(|errno| io::Error::from_raw_os_error(errno - HOOK_ERRNO_BASE))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_a_sandbox_failure() {
        let mut command = Command::new("/nonexistent/istio-iptables-test-program");
        // Whether or not the hook itself may run here (it needs CAP_SYS_ADMIN), the result is
        // one of the two, told apart.
        confine(&mut command, None).expect("sandbox setup");
        let err = command.spawn().expect_err("spawn fails");
        match hook_failure(&err) {
            Some(hook) => assert_ne!(hook.raw_os_error(), None),
            None => assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}"),
        }
        let plain = Command::new("/nonexistent/istio-iptables-test-program").spawn().expect_err("spawn fails");
        assert!(hook_failure(&plain).is_none());
    }
}
