//! Thin wrappers over the few syscalls and socket options that std does not
//! expose. Kept in one place so the `unsafe` surface is easy to audit.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt, SockaddrIn, SockaddrIn6};
use nix::sys::time::TimeVal;

/// Moves the calling thread (only) into the network namespace behind `fd`.
///
/// Only raw syscalls: this also runs between fork and exec (`pre_exec`).
pub fn enter_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which is valid for the borrow.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Drops the calling thread's credentials to `uid`/`gid` (no supplementary
/// groups). Irreversible for that thread.
///
/// Raw syscalls on purpose: glibc's `setuid` family applies the change to
/// every thread of the process (POSIX semantics), which would demote the
/// whole test binary. The kernel keeps credentials per thread, and sockets
/// capture the creating thread's credentials, which is exactly what
/// `-m owner --uid-owner/--gid-owner` matches on.
pub fn become_user_on_this_thread(uid: u32, gid: u32) -> io::Result<()> {
    let uid = libc::c_long::from(uid);
    let gid = libc::c_long::from(gid);
    // SAFETY: plain credential syscalls; setgroups gets an empty list.
    unsafe {
        check(libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, ptr::null::<libc::gid_t>()))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    Ok(())
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets IP_TRANSPARENT / IPV6_TRANSPARENT, needed to bind non-local
/// addresses and to receive TPROXY'd connections.
pub fn set_transparent<F: AsFd>(socket: &F, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        // nix 0.29 has no IPV6_TRANSPARENT wrapper.
        set_int_option(socket, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)
    } else {
        Ok(setsockopt(socket, sockopt::IpTransparent, &true)?)
    }
}

/// Asks for the IP(V6)_ORIGDSTADDR control message on received datagrams:
/// the destination the packet carried when it reached the socket.
pub fn set_recv_original_dst<F: AsFd>(socket: &F, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        Ok(setsockopt(socket, sockopt::Ipv6OrigDstAddr, &true)?)
    } else {
        Ok(setsockopt(socket, sockopt::Ipv4OrigDstAddr, &true)?)
    }
}

fn set_int_option<F: AsFd>(socket: &F, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer/length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pre-NAT destination of an accepted TCP connection, as Envoy reads it
/// (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`). `None` when the connection
/// was not NATed (the kernel answers ENOENT).
pub fn original_dst<F: AsFd>(socket: &F, ipv6: bool) -> Option<SocketAddr> {
    if ipv6 {
        let raw = getsockopt(socket, sockopt::Ip6tOriginalDst).ok()?;
        Some(SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw))))
    } else {
        let raw = getsockopt(socket, sockopt::OriginalDst).ok()?;
        Some(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
    }
}

/// For SO_RCVTIMEO / SO_SNDTIMEO.
pub fn timeval(duration: Duration) -> TimeVal {
    let seconds = libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX);
    TimeVal::new(seconds, libc::suseconds_t::from(duration.subsec_micros()))
}

/// One datagram read with recvmsg(): its length, sender, and the
/// IP(V6)_ORIGDSTADDR control message if the socket asked for it
/// ([`set_recv_original_dst`]). Hand-rolled because nix's recvmsg needs its
/// `uio` feature, which this crate does not enable.
pub fn recv_with_dst<F: AsFd>(socket: &F, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut sender: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // Room for one sockaddr_in6 control message; u64 for cmsghdr alignment.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    let mut header: libc::msghdr = unsafe { mem::zeroed() };
    header.msg_name = ptr::from_mut(&mut sender).cast();
    header.msg_namelen = mem::size_of_val(&sender) as libc::socklen_t;
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = mem::size_of_val(&control) as _;

    // SAFETY: every pointer in `header` refers to a live local buffer whose
    // length is given alongside it.
    let received = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut header, 0) };
    let len = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    let sender = storage_to_std(&sender).ok_or_else(|| io::Error::other("datagram from a non-IP sender"))?;
    // SAFETY: the kernel filled `header` and its control buffer.
    let dst = unsafe { original_dst_cmsg(&header) };
    Ok((len, sender, dst))
}

/// Walks the control messages of a received `header`.
///
/// # Safety
/// `header` must come from a successful recvmsg() with its control buffer
/// still alive.
unsafe fn original_dst_cmsg(header: &libc::msghdr) -> Option<SocketAddr> {
    let mut cmsg = libc::CMSG_FIRSTHDR(header);
    while !cmsg.is_null() {
        let data = libc::CMSG_DATA(cmsg);
        match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
            (libc::SOL_IP, libc::IP_ORIGDSTADDR) => {
                let raw: libc::sockaddr_in = ptr::read_unaligned(data.cast());
                return Some(SocketAddr::V4(SockaddrIn::from(raw).into()));
            }
            (libc::SOL_IPV6, libc::IPV6_ORIGDSTADDR) => {
                let raw: libc::sockaddr_in6 = ptr::read_unaligned(data.cast());
                return Some(SocketAddr::V6(SockaddrIn6::from(raw).into()));
            }
            _ => cmsg = libc::CMSG_NXTHDR(header, cmsg),
        }
    }
    None
}

fn storage_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let storage = ptr::from_ref(storage);
    // SAFETY: sockaddr_storage is large and aligned enough for both; the
    // family field says which one the kernel wrote.
    unsafe {
        match libc::c_int::from((*storage).ss_family) {
            libc::AF_INET => {
                let raw = *storage.cast::<libc::sockaddr_in>();
                Some(SocketAddr::V4(SockaddrIn::from(raw).into()))
            }
            libc::AF_INET6 => {
                let raw = *storage.cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(SockaddrIn6::from(raw).into()))
            }
            _ => None,
        }
    }
}
