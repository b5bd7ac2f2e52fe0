//! Listening sockets inside a namespace that record what reaches them.
//!
//! Each listener runs a background thread; every accepted connection (or
//! received datagram) is answered with the listener's label, so the client
//! learns which listener it reached, and recorded, so the test can inspect
//! addresses as the proxy would see them.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};

use super::{sys, Netns, WAIT};

/// How often background threads check whether they should stop.
const POLL: Duration = Duration::from_millis(50);
/// Bound on reading a client's payload, so a silent client cannot wedge the
/// listener thread.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_PAYLOAD: u64 = 64 * 1024;

/// One accepted TCP connection, as seen by the listening side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// The accepted socket's local address; for a transparent (TPROXY)
    /// listener this is the destination the client asked for.
    pub local: SocketAddr,
    /// `SO_ORIGINAL_DST` (v4) / `IP6T_SO_ORIGINAL_DST` (v6): the destination
    /// before REDIRECT/DNAT, or `None` if the connection was not NATed.
    pub original_dst: Option<SocketAddr>,
    /// What the client sent, up to the first newline.
    pub payload: Vec<u8>,
}

/// One received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's address.
    pub peer: SocketAddr,
    /// The address the socket is bound to (possibly a wildcard).
    pub bound: SocketAddr,
    /// The packet's destination when it reached the socket
    /// (IP(V6)_ORIGDSTADDR): after REDIRECT this is the redirected address,
    /// after TPROXY the original one. UDP has no SO_ORIGINAL_DST.
    pub dst: Option<SocketAddr>,
    pub payload: Vec<u8>,
}

/// A TCP listener running inside a namespace.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    recorder: Recorder<Accepted>,
}

impl Listener {
    /// Listens on `ip:port` in `ns` (IPv6 sockets are v6-only, so v4 and v6
    /// listeners on the same port can coexist, as with Envoy).
    pub fn tcp(ns: &Netns, ip: IpAddr, port: u16) -> Listener {
        Listener::start(ns, SocketAddr::new(ip, port), false)
    }

    /// Like [`Listener::tcp`] with IP_TRANSPARENT / IPV6_TRANSPARENT, as an
    /// Envoy listener receiving TPROXY'd connections.
    pub fn tcp_transparent(ns: &Netns, ip: IpAddr, port: u16) -> Listener {
        Listener::start(ns, SocketAddr::new(ip, port), true)
    }

    fn start(ns: &Netns, addr: SocketAddr, transparent: bool) -> Listener {
        let listener = ns
            .run(|| tcp_listen(addr, transparent))
            .unwrap_or_else(|e| panic!("listening on {addr} in {}: {e}", ns.name()));
        let local = listener.local_addr().expect("listener local address");
        let label = label("tcp", ns, local);
        let reply = label.clone();
        let recorder = Recorder::spawn(label, move |records| {
            accept_one(&listener, &reply, records);
        });
        Listener { local, recorder }
    }

    /// What the listener answers each client with.
    pub fn label(&self) -> &str {
        &self.recorder.label
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next accepted connection; panics if none arrives within [`WAIT`].
    pub fn next(&self) -> Accepted {
        self.recorder.next()
    }

    pub fn next_within(&self, timeout: Duration) -> Option<Accepted> {
        self.recorder.next_within(timeout)
    }

    /// Panics if a connection arrives within `window` (or arrived already).
    pub fn assert_idle(&self, window: Duration) {
        self.recorder.assert_idle(window);
    }
}

/// A UDP socket running inside a namespace. Non-transparent listeners
/// answer each datagram with their label (a transparent socket would have to
/// answer from the original destination, which these do not attempt).
///
/// Answers leave from the routing-chosen source address, so a client behind
/// REDIRECT only accepts them (after conntrack's reverse NAT) if the
/// listener is bound to the redirect target, e.g. 127.0.0.1 / ::1 for
/// locally generated traffic, as istio-agent's DNS proxy is; a wildcard
/// listener still records the datagram but its answer is dropped.
#[derive(Debug)]
pub struct UdpListener {
    local: SocketAddr,
    recorder: Recorder<Datagram>,
}

impl UdpListener {
    pub fn bind(ns: &Netns, ip: IpAddr, port: u16) -> UdpListener {
        UdpListener::start(ns, SocketAddr::new(ip, port), false)
    }

    /// With IP(V6)_TRANSPARENT, for TPROXY'd datagrams.
    pub fn bind_transparent(ns: &Netns, ip: IpAddr, port: u16) -> UdpListener {
        UdpListener::start(ns, SocketAddr::new(ip, port), true)
    }

    fn start(ns: &Netns, addr: SocketAddr, transparent: bool) -> UdpListener {
        let socket = ns
            .run(|| udp_bind(addr, transparent))
            .unwrap_or_else(|e| panic!("binding UDP {addr} in {}: {e}", ns.name()));
        let local = socket.local_addr().expect("UDP local address");
        let label = label("udp", ns, local);
        let reply = (!transparent).then(|| label.clone());
        let recorder = Recorder::spawn(label, move |records| {
            receive_one(&socket, local, reply.as_deref(), records);
        });
        UdpListener { local, recorder }
    }

    pub fn label(&self) -> &str {
        &self.recorder.label
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next datagram; panics if none arrives within [`WAIT`].
    pub fn next(&self) -> Datagram {
        self.recorder.next()
    }

    pub fn next_within(&self, timeout: Duration) -> Option<Datagram> {
        self.recorder.next_within(timeout)
    }

    pub fn assert_idle(&self, window: Duration) {
        self.recorder.assert_idle(window);
    }
}

fn label(protocol: &str, ns: &Netns, local: SocketAddr) -> String {
    format!("{protocol} {local} in {}", ns.name())
}

/// A background thread feeding records through a channel; stopped and
/// joined on drop so the socket it owns is closed before the namespace goes.
#[derive(Debug)]
struct Recorder<T> {
    label: String,
    records: Receiver<T>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Recorder<T> {
    /// `step` must return within about [`POLL`] so the thread notices `stop`.
    fn spawn<F>(label: String, mut step: F) -> Recorder<T>
    where
        F: FnMut(&Sender<T>) + Send + 'static,
    {
        let (sender, records) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let worker = thread::Builder::new()
            .name(format!("listener {label}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    step(&sender);
                }
            })
            .expect("spawning listener thread");
        Recorder { label, records, stop, worker: Some(worker) }
    }

    fn next(&self) -> T {
        self.next_within(WAIT).unwrap_or_else(|| panic!("nothing reached `{}` within {WAIT:?}", self.label))
    }

    fn next_within(&self, timeout: Duration) -> Option<T> {
        match self.records.recv_timeout(timeout) {
            Ok(record) => Some(record),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("listener `{}` thread died", self.label),
        }
    }
}

impl<T: Send + std::fmt::Debug + 'static> Recorder<T> {
    fn assert_idle(&self, window: Duration) {
        if let Some(record) = self.next_within(window) {
            panic!("`{}` unexpectedly received {record:?}", self.label);
        }
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Creates the listening socket by hand: IP_TRANSPARENT and IPV6_V6ONLY
/// must be set before bind(), which std does not allow.
fn tcp_listen(addr: SocketAddr, transparent: bool) -> io::Result<TcpListener> {
    let fd = new_socket(addr, SockType::Stream, transparent)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::new(128)?)?;
    // accept() honours SO_RCVTIMEO, which lets the thread poll `stop`.
    setsockopt(&fd, sockopt::ReceiveTimeout, &sys::timeval(POLL))?;
    Ok(TcpListener::from(fd))
}

fn udp_bind(addr: SocketAddr, transparent: bool) -> io::Result<UdpSocket> {
    let fd = new_socket(addr, SockType::Datagram, transparent)?;
    sys::set_recv_original_dst(&fd, addr.is_ipv6())?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

fn new_socket(addr: SocketAddr, kind: SockType, transparent: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if transparent {
        sys::set_transparent(&fd, addr.is_ipv6())?;
    }
    Ok(fd)
}

fn accept_one(listener: &TcpListener, reply: &str, records: &Sender<Accepted>) {
    match listener.accept() {
        Ok((stream, peer)) => {
            let _ = records.send(serve(stream, peer, reply));
        }
        Err(e) if is_timeout(&e) => {}
        Err(e) => {
            eprintln!("listener {reply}: accept failed: {e}");
            thread::sleep(POLL);
        }
    }
}

/// Reads the client's line, answers with `reply`, then closes.
fn serve(mut stream: TcpStream, peer: SocketAddr, reply: &str) -> Accepted {
    let local = stream.local_addr().expect("accepted socket local address");
    let original_dst = sys::original_dst(&stream, local.is_ipv6());
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let payload = read_line(&mut stream);
    let _ = stream.write_all(reply.as_bytes());
    Accepted { peer, local, original_dst, payload }
}

/// Up to and excluding the first newline, or everything until EOF/timeout.
fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut byte = [0u8; 1];
    let mut limited = stream.take(MAX_PAYLOAD);
    while let Ok(1) = limited.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        payload.push(byte[0]);
    }
    payload
}

fn receive_one(socket: &UdpSocket, bound: SocketAddr, reply: Option<&str>, records: &Sender<Datagram>) {
    match receive_datagram(socket, bound) {
        Ok(datagram) => {
            if let Some(reply) = reply {
                let _ = socket.send_to(reply.as_bytes(), datagram.peer);
            }
            let _ = records.send(datagram);
        }
        Err(e) if is_timeout(&e) => {}
        Err(e) => {
            eprintln!("UDP listener {bound}: receive failed: {e}");
            thread::sleep(POLL);
        }
    }
}

/// recvmsg() rather than recv_from(): the destination address only comes
/// as a control message.
fn receive_datagram(socket: &UdpSocket, bound: SocketAddr) -> io::Result<Datagram> {
    let mut payload = vec![0u8; 64 * 1024];
    let (len, peer, dst) = sys::recv_with_dst(socket, &mut payload)?;
    payload.truncate(len);
    Ok(Datagram { peer, bound, dst, payload })
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
