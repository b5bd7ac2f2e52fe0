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
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Keep the mounts below out of the node's namespace; some hosts refuse private.
            propagation(libc::MS_PRIVATE).or_else(|_| propagation(libc::MS_SLAVE))?;
            bind(&dev_null, &nsswitch)?;
            if let Some(source) = &lock_source {
                bind(source, &lock_target)?;
            }
            Ok(())
        });
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
