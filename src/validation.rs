//! `--run-validation`: prove that the capture rules are live by sending ourselves a connection
//! that only the rules can deliver (upstream `tools/istio-iptables/pkg/validation`).
//!
//! The validator listens where Envoy would (the proxy ports on loopback) and dials `127.0.0.6`
//! (`::6`) on the probe port, where nothing listens. Only the `ISTIO_OUTPUT -o lo ... --uid-owner
//! <proxy uid> -j ISTIO_IN_REDIRECT` rule can turn that connection into one that our listener
//! accepts, and `SO_ORIGINAL_DST` then still shows the probe port. That rule matches the proxy's
//! uid/gid only, which is why the `istio-validation` container runs as 1337.
//!
//! Upstream runs the server and the client in goroutines; here one thread does both with
//! `poll`, which works because the kernel completes a loopback handshake into the listen queue
//! before anyone calls `accept`. Nothing is left running when the validator returns, so it can
//! also be driven in-process by tests.

use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
use nix::sys::time::TimeVal;

use crate::config::Config;
use crate::error::{Error, Result};

/// Upstream's text, word for word: the CNI repair controller and people's log searches key on it.
pub const FAILURE_MESSAGE: &str = "iptables validation failed; workload is not ready for Istio.
When using Istio CNI, this can occur if a pod is scheduled before the node is ready.

If installed with 'cni.repair.deletePods=true', this pod should automatically be deleted and retry.
Otherwise, this pod will need to be manually removed so that it is scheduled on a node with istio-cni running, allowing iptables rules to be established.
";

/// Upstream's client sleeps this long between attempts.
const DIAL_INTERVAL: Duration = Duration::from_secs(1);

/// Where to listen, what to dial and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The proxy's outbound and inbound-capture ports on loopback.
    pub listen: Vec<SocketAddr>,
    /// `127.0.0.6` / `::6` on the probe port: reachable only through the redirect rule.
    pub target: SocketAddr,
    /// The client binds here first (loopback, any port), as upstream's dialer does.
    pub source: SocketAddr,
    pub timeout: Duration,
}

/// Why the probe failed; [`run`] turns either into upstream's failure message and exit 126.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no listener available: {0}")]
    NoListener(String),
    #[error("validation timeout")]
    Timeout,
}

impl Probe {
    /// The addresses upstream derives from the config: IPv6 loopback when the pod's host IP is
    /// IPv6, IPv4 loopback otherwise.
    pub fn for_config(config: &Config) -> Probe {
        // Without a detected host IP (`--enable-inbound-ipv6` skips detection) the IPv4 path is
        // used: IPv4 rules are always installed, so it is the one that can always succeed.
        let (listen_ip, target_ip): (IpAddr, IpAddr) = match config.host_ip {
            Some(IpAddr::V6(_)) => (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into()),
            _ => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::new(127, 0, 0, 6).into()),
        };
        Probe {
            listen: [config.proxy_port, config.inbound_capture_port]
                .iter()
                .map(|port| SocketAddr::new(listen_ip, port.0))
                .collect(),
            target: SocketAddr::new(target_ip, config.probe_port),
            source: SocketAddr::new(listen_ip, 0),
            timeout: config.probe_timeout,
        }
    }

    /// Listens, dials once a second, and returns as soon as a connection arrives whose original
    /// destination port is the probe port, or when the timeout (started before listening, as
    /// upstream's timer is) expires.
    pub fn run(&self) -> Result<(), ProbeError> {
        let deadline = Instant::now() + self.timeout;
        let listeners: Vec<TcpListener> = self.listen.iter().filter_map(|addr| open_listener(*addr)).collect();
        if listeners.is_empty() {
            let addrs: Vec<String> = self.listen.iter().map(SocketAddr::to_string).collect();
            return Err(ProbeError::NoListener(addrs.join(",")));
        }
        let mut next_dial = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ProbeError::Timeout);
            }
            if now >= next_dial {
                self.dial(deadline - now);
                next_dial = now + DIAL_INTERVAL;
            }
            let wait = deadline.min(next_dial).saturating_duration_since(Instant::now());
            for listener in readable(&listeners, wait) {
                if self.serve(listener) {
                    return Ok(());
                }
            }
        }
    }

    /// One client attempt: connect and close at once; the server side does the checking.
    fn dial(&self, remaining: Duration) {
        if let Err((step, errno)) = connect(self.source, self.target, remaining.min(DIAL_INTERVAL)) {
            tracing::error!(
                "Error connecting to {target}: dial tcp {source}->{target}: {step}: {}",
                go_errno(errno),
                target = self.target,
                source = self.source,
            );
        }
    }

    /// Accepts one pending connection and reports whether it was the redirected probe.
    fn serve(&self, listener: &TcpListener) -> bool {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // Readiness can be stale; another pass will pick the connection up.
            Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
            Err(err) => {
                tracing::error!("Listener failed to accept connection: {err}");
                return false;
            }
        };
        let port = match original_dst_port(&stream, self.target.is_ipv6()) {
            Ok(port) => port,
            Err(errno) => {
                tracing::error!("Error getting original dst: {}", go_errno(errno));
                return false;
            }
        };
        if let Ok(local) = stream.local_addr() {
            tracing::info!("Local addr {local}");
        }
        // Upstream prints the client's IP here, not the original destination's; kept so log
        // scrapers see the same line.
        let client = stream.peer_addr().map(|addr| addr.ip().to_string()).unwrap_or_default();
        tracing::info!("Original addr {client}: {port}");
        // The client has usually closed already; a failed reply changes nothing.
        let _ = (&stream).write_all(port.to_string().as_bytes());
        port == self.target.port()
    }
}

/// Runs the validator for `config`, logging as upstream does. Any failure becomes
/// [`Error::Validation`] carrying upstream's message (exit 126).
pub fn run(config: &Config) -> Result<()> {
    match Probe::for_config(config).run() {
        Ok(()) => {
            tracing::info!("Validation passed, iptables rules established");
            Ok(())
        }
        Err(err) => {
            // Upstream reports a server error; the timeout is only visible through the message.
            if err != ProbeError::Timeout {
                tracing::error!("Validation failed: {err}");
            }
            Err(Error::Validation(err))
        }
    }
}

/// A non-blocking listener with SO_REUSEADDR and SO_REUSEPORT, so that it can share the port
/// with an Envoy that is already up (a restarted validation container, for example).
fn open_listener(addr: SocketAddr) -> Option<TcpListener> {
    match listen(addr) {
        Ok(listener) => {
            tracing::info!("Listening on {addr}");
            Some(listener)
        }
        Err((step, errno)) => {
            tracing::error!("Error on listening: listen tcp {addr}: {step}: {}", go_errno(errno));
            None
        }
    }
}

/// A failed socket call: which step (Go's naming: `socket`, `bind`, ...) and why.
type Failure = (&'static str, Errno);

fn listen(addr: SocketAddr) -> Result<TcpListener, Failure> {
    let fd = socket::socket(family(addr), SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(|e| ("socket", e))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ("setsockopt", e))?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| ("setsockopt", e))?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| ("bind", e))?;
    socket::listen(&fd, Backlog::MAXCONN).map_err(|e| ("listen", e))?;
    Ok(TcpListener::from(fd))
}

/// Connects from `source` to `target`, giving up after `timeout`, then closes (the socket is
/// dropped on return). Linux bounds a blocking connect by SO_SNDTIMEO, which keeps a dropped
/// SYN from stalling the loop past the deadline.
fn connect(source: SocketAddr, target: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    let fd =
        socket::socket(family(target), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(|e| ("socket", e))?;
    // A zero SO_SNDTIMEO would mean "wait forever".
    let timeout = timeout.max(Duration::from_millis(1));
    let timeout =
        TimeVal::new(timeout.as_secs().try_into().unwrap_or(nix::libc::time_t::MAX), timeout.subsec_micros().into());
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout).map_err(|e| ("setsockopt", e))?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(source)).map_err(|e| ("bind", e))?;
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(target)).map_err(|e| ("connect", e))
}

fn family(addr: SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The port the connection was addressed to before NAT, from conntrack.
fn original_dst_port(stream: &TcpStream, ipv6: bool) -> Result<u16, Errno> {
    if ipv6 {
        socket::getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sa| u16::from_be(sa.sin6_port))
    } else {
        socket::getsockopt(stream, sockopt::OriginalDst).map(|sa| u16::from_be(sa.sin_port))
    }
}

/// The listeners that have a connection waiting, after at most `wait`.
fn readable(listeners: &[TcpListener], wait: Duration) -> Vec<&TcpListener> {
    let mut fds: Vec<PollFd> = listeners.iter().map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)).collect();
    // Round up so a sub-millisecond remainder does not turn into a busy loop.
    let millis = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) | Err(Errno::EINTR) => return Vec::new(),
        Ok(_) => {}
        Err(errno) => {
            tracing::error!("Listener failed to accept connection: poll: {}", go_errno(errno));
            return Vec::new();
        }
    }
    let ready: Vec<bool> = fds.iter().map(|fd| fd.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN))).collect();
    listeners.iter().zip(ready).filter_map(|(listener, ready)| ready.then_some(listener)).collect()
}

/// Go prints errno text in lower case (`connection refused`), glibc capitalises it.
fn go_errno(errno: Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => desc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_probe(listen: Vec<SocketAddr>, target: SocketAddr, timeout: Duration) -> Probe {
        Probe { listen, target, source: "127.0.0.1:0".parse().unwrap(), timeout }
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn config(args: &[&str]) -> Config {
        let argv = ["istio-iptables", "--enable-inbound-ipv6=false"].into_iter().chain(args.iter().copied());
        let env = std::collections::BTreeMap::new();
        let flags = match crate::cli::parse(argv, &env).unwrap() {
            crate::cli::Parsed::Run(flags) => flags,
            other => panic!("{other:?}"),
        };
        Config::build(&flags, &env, &crate::host::HostFacts::default()).unwrap()
    }

    #[test]
    fn probe_addresses_follow_the_host_ip_family_and_the_flags() {
        let mut config = config(&["-p", "1501", "-z", "1506", "--iptables-probe-port=1502", "--probe-timeout=250ms"]);
        config.host_ip = Some("10.0.0.5".parse().unwrap());
        let expected_v4 = Probe {
            listen: vec!["127.0.0.1:1501".parse().unwrap(), "127.0.0.1:1506".parse().unwrap()],
            target: "127.0.0.6:1502".parse().unwrap(),
            source: "127.0.0.1:0".parse().unwrap(),
            timeout: Duration::from_millis(250),
        };
        assert_eq!(Probe::for_config(&config), expected_v4);
        config.host_ip = None;
        assert_eq!(Probe::for_config(&config), expected_v4, "no detected host IP: IPv4");
        config.host_ip = Some("fd00::5".parse().unwrap());
        let v6 = Probe::for_config(&config);
        assert_eq!(v6.listen, ["[::1]:1501".parse().unwrap(), "[::1]:1506".parse::<SocketAddr>().unwrap()]);
        assert_eq!(v6.target, "[::6]:1502".parse().unwrap());
        assert_eq!(v6.source, "[::1]:0".parse().unwrap());
    }

    #[test]
    fn failure_message_is_upstreams() {
        assert!(FAILURE_MESSAGE.starts_with("iptables validation failed; workload is not ready for Istio.\n"));
        assert!(FAILURE_MESSAGE.ends_with("allowing iptables rules to be established.\n"));
        assert_eq!(FAILURE_MESSAGE.lines().count(), 5);
        assert_eq!(ProbeError::Timeout.to_string(), "validation timeout");
        assert_eq!(
            ProbeError::NoListener("127.0.0.1:15001,127.0.0.1:15006".into()).to_string(),
            "no listener available: 127.0.0.1:15001,127.0.0.1:15006"
        );
    }

    #[test]
    fn errno_text_is_lower_cased_like_go() {
        assert_eq!(go_errno(Errno::ECONNREFUSED), "connection refused");
        assert_eq!(go_errno(Errno::EADDRINUSE), "address already in use");
    }

    #[test]
    fn unredirected_probe_times_out_after_the_timeout() {
        let probe = loopback_probe(
            vec!["127.0.0.1:0".parse().unwrap()],
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), closed_port()),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        assert_eq!(probe.run(), Err(ProbeError::Timeout));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn taken_ports_mean_no_listener() {
        // Plain std listeners set no SO_REUSEPORT, so the validator cannot share their ports.
        let taken = [TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap()];
        let addrs: Vec<SocketAddr> = taken.iter().map(|l| l.local_addr().unwrap()).collect();
        let probe = loopback_probe(addrs.clone(), "127.0.0.6:15002".parse().unwrap(), Duration::from_secs(5));
        let started = Instant::now();
        let expected = format!("{},{}", addrs[0], addrs[1]);
        assert_eq!(probe.run(), Err(ProbeError::NoListener(expected)));
        assert!(started.elapsed() < Duration::from_secs(1), "fails fast, without waiting for the timeout");
    }

    #[test]
    fn one_free_port_is_enough_to_listen() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let probe = loopback_probe(
            vec![taken.local_addr().unwrap(), "127.0.0.1:0".parse().unwrap()],
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), closed_port()),
            Duration::from_millis(100),
        );
        assert_eq!(probe.run(), Err(ProbeError::Timeout));
    }

    #[test]
    fn connect_reports_the_failing_step() {
        let refused = connect(
            "127.0.0.1:0".parse().unwrap(),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), closed_port()),
            Duration::from_secs(1),
        );
        assert_eq!(refused, Err(("connect", Errno::ECONNREFUSED)));
        // 192.0.2.1 (TEST-NET-1) is never a local address, so binding to it must fail.
        let unbindable = connect(
            "192.0.2.1:0".parse().unwrap(),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), closed_port()),
            Duration::from_secs(1),
        );
        assert_eq!(unbindable, Err(("bind", Errno::EADDRNOTAVAIL)));
    }
}
