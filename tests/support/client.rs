//! Clients that originate traffic inside a namespace as a chosen user.
//!
//! The socket is created on a dedicated thread that entered the namespace
//! and dropped to the requested uid/gid (see [`Netns::run_as`]); the socket
//! therefore carries those credentials, which is what `-m owner` matches.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use super::{sys, Netns, WAIT};

/// What a TCP client observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpExchange {
    /// The client socket's address (source address and port).
    pub local: SocketAddr,
    /// The address the client believes it is connected to.
    pub peer: SocketAddr,
    /// The listener's answer (its label, for harness listeners).
    pub response: String,
}

/// What a UDP client observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpExchange {
    pub local: SocketAddr,
    /// The answer, or `None` if nothing came back within the timeout.
    pub response: Option<String>,
}

/// Builder for one connection or datagram. Defaults: root, no source
/// binding, [`WAIT`] timeout, payload `hello from uid <uid>`.
#[derive(Clone, Debug)]
pub struct Client<'a> {
    ns: &'a Netns,
    user: Option<(u32, u32)>,
    source: Option<IpAddr>,
    timeout: Duration,
    payload: Option<Vec<u8>>,
}

impl<'a> Client<'a> {
    pub fn new(ns: &'a Netns) -> Client<'a> {
        Client { ns, user: None, source: None, timeout: WAIT, payload: None }
    }

    /// Originate the traffic as `uid`/`gid` (no supplementary groups).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Bind the source address, e.g. 127.0.0.6 like Envoy's inbound
    /// passthrough.
    pub fn source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// Bounds connect, the exchange, and waiting for a UDP answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to send: TCP appends a newline (the harness listener reads one
    /// line), UDP sends it as the datagram.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = Some(payload.to_vec());
        self
    }

    /// Connects to `dst`, sends the payload, half-closes and reads the
    /// answer until EOF. Errors are the connection's (refused, timed out...).
    pub fn tcp(&self, dst: impl Into<SocketAddr>) -> io::Result<TcpExchange> {
        let dst = dst.into();
        let mut line = self.message();
        line.push(b'\n');
        let (source, timeout) = (self.source, self.timeout);
        self.run(move || tcp_exchange(dst, source, timeout, &line))
    }

    /// Sends one datagram from a connected socket (as resolvers do, so
    /// only answers from `dst` – after conntrack's reverse NAT – are
    /// accepted) and waits for one answer.
    pub fn udp(&self, dst: impl Into<SocketAddr>) -> io::Result<UdpExchange> {
        let dst = dst.into();
        let (source, timeout, datagram) = (self.source, self.timeout, self.message());
        self.run(move || udp_exchange(dst, source, timeout, &datagram))
    }

    fn message(&self) -> Vec<u8> {
        match (&self.payload, self.user) {
            (Some(payload), _) => payload.clone(),
            (None, Some((uid, _))) => format!("hello from uid {uid}").into_bytes(),
            (None, None) => b"hello from uid 0".to_vec(),
        }
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.user {
            Some((uid, gid)) => self.ns.run_as(uid, gid, f),
            None => self.ns.run(f),
        }
    }
}

/// TCP exchange from `ns` as `uid`/`gid` with default settings.
pub fn connect_as(ns: &Netns, uid: u32, gid: u32, dst: impl Into<SocketAddr>) -> io::Result<TcpExchange> {
    Client::new(ns).user(uid, gid).tcp(dst)
}

/// UDP exchange from `ns` as `uid`/`gid` with default settings.
pub fn send_udp_as(ns: &Netns, uid: u32, gid: u32, dst: impl Into<SocketAddr>) -> io::Result<UdpExchange> {
    Client::new(ns).user(uid, gid).udp(dst)
}

fn tcp_exchange(dst: SocketAddr, source: Option<IpAddr>, timeout: Duration, payload: &[u8]) -> io::Result<TcpExchange> {
    let stream = tcp_connect(dst, source, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    (&stream).write_all(payload)?;
    stream.shutdown(Shutdown::Write)?;
    let mut response = Vec::new();
    (&stream).read_to_end(&mut response)?;
    Ok(TcpExchange { local, peer, response: String::from_utf8_lossy(&response).into_owned() })
}

/// By hand because std cannot bind a source address before connecting.
fn tcp_connect(dst: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let family = if dst.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(ip) = source {
        // Port 0: the kernel still picks the source port.
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(ip, 0)))?;
    }
    // A blocking connect() gives up after SO_SNDTIMEO, failing with
    // EINPROGRESS.
    setsockopt(&fd, sockopt::SendTimeout, &sys::timeval(timeout))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => Ok(TcpStream::from(fd)),
        Err(Errno::EINPROGRESS) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {dst} timed out after {timeout:?}")))
        }
        Err(errno) => Err(io::Error::new(io::Error::from(errno).kind(), format!("connect to {dst}: {errno}"))),
    }
}

fn udp_exchange(dst: SocketAddr, source: Option<IpAddr>, timeout: Duration, payload: &[u8]) -> io::Result<UdpExchange> {
    let unspecified = if dst.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let socket = UdpSocket::bind(SocketAddr::new(source.unwrap_or(unspecified), 0))?;
    socket.connect(dst)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(payload)?;
    let local = socket.local_addr()?;
    let mut buffer = [0u8; 64 * 1024];
    let response = match socket.recv(&mut buffer) {
        Ok(len) => Some(String::from_utf8_lossy(&buffer[..len]).into_owned()),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => None,
        Err(e) => return Err(e),
    };
    Ok(UdpExchange { local, response })
}
