//! Facts read from the host: passwd/group entries, resolv.conf nameservers and the netns's
//! interface addresses.
//!
//! Nothing here goes through NSS, so a statically linked binary sees the same answers as a
//! dynamically linked one (upstream is a static Go binary with the same property).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use nix::sys::socket::SockaddrStorage;

use crate::gocompat::parse_go_addr;

/// Looks up a user's numeric uid by name in a passwd-format file
/// (`name:pw:uid:gid:gecos:home:shell`). Used for `ENVOY_USER`; the caller falls back to 1337.
///
/// Follows Go's pure-Go `os/user` reader: lines are trimmed, blank and `#` lines skipped, and a
/// line only counts if it has all seven fields, its name does not start with `+`/`-` (NIS
/// entries), and both uid and gid are integers. The first such line for the name decides.
pub fn lookup_uid(passwd_path: &Path, user: &str) -> Option<u32> {
    let text = read_lossy(passwd_path)?;
    let uid = colon_file_lines(&text).find_map(|line| {
        let fields: Vec<&str> = line.splitn(7, ':').collect();
        let [name, _, uid, gid, _, _, _] = fields[..] else {
            return None;
        };
        (is_lookup_name(name, user) && is_go_int(uid) && is_go_int(gid)).then_some(uid)
    })?;
    uid.parse().ok()
}

/// Looks up a group's numeric gid by name in an `/etc/group`-format file
/// (`name:pw:gid:members`), with the same line rules as [`lookup_uid`].
pub fn lookup_gid(group_path: &Path, group: &str) -> Option<u32> {
    let text = read_lossy(group_path)?;
    let gid = colon_file_lines(&text).find_map(|line| {
        let fields: Vec<&str> = line.splitn(4, ':').collect();
        let [name, _, gid, _] = fields[..] else {
            return None;
        };
        (is_lookup_name(name, group) && is_go_int(gid)).then_some(gid)
    })?;
    gid.parse().ok()
}

/// Real passwd files may hold stray non-UTF-8 bytes (e.g. in gecos); they must not hide the
/// entries around them.
fn read_lossy(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn colon_file_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// glibc (and Go, which copies it) refuses to match `+name`/`-name` compat entries.
fn is_lookup_name(name: &str, wanted: &str) -> bool {
    !name.is_empty() && name == wanted && !name.starts_with(['+', '-'])
}

/// Go `strconv.Atoi` acceptance: optional sign, decimal digits, fits in int64.
fn is_go_int(s: &str) -> bool {
    s.parse::<i64>().is_ok()
}

/// resolv.conf nameservers (rules.md §1.7): each line is split on whitespace, and a line whose
/// first field is exactly `nameserver` contributes its second field verbatim. Order and
/// duplicates are kept and there is no limit of three.
///
/// Whitespace is Unicode whitespace, as Go's `strings.Fields` uses (it includes `\v`, which
/// ASCII-whitespace splitting would not).
pub fn parse_resolv_conf_nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next()) {
                (Some("nameserver"), Some(server)) => Some(server.to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Nameservers split by family, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsServers {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Splits nameserver entries by family (rules.md §1.7 step 3). IPv4-mapped IPv6 stays IPv6.
///
/// Unparsable entries are dropped as upstream does. IPv6 entries with a zone are dropped too,
/// which upstream does not do: it copies the zone into an iptables `-d` argument, which
/// iptables-restore then rejects, failing the whole run.
pub fn split_dns_servers(entries: &[String]) -> DnsServers {
    let mut servers = DnsServers::default();
    for entry in entries {
        match parse_go_addr(entry) {
            Ok((IpAddr::V4(addr), _)) => servers.v4.push(addr),
            Ok((IpAddr::V6(_), Some(zone))) => {
                tracing::warn!("ignoring nameserver {entry}: IPv6 zone %{zone} cannot be used in an iptables rule")
            }
            Ok((IpAddr::V6(addr), None)) => servers.v6.push(addr),
            Err(err) => tracing::debug!("ignoring nameserver {entry}: {err}"),
        }
    }
    servers
}

/// Why IPv6 detection failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectError {
    #[error("no valid local IP address found")]
    NoValidAddress,
    #[error("failed to list interface addresses: {0}")]
    List(String),
}

/// Upstream's IPv6 decision (rules.md §1.6, apply.md §1.2 step 4) over addresses in kernel
/// order. Returns `(host_ip, enable_ipv6)`.
///
/// IPv4-mapped addresses are unmapped; loopback, link-local unicast and link-local multicast
/// addresses are skipped. Without dual stack the first remaining address decides; with it,
/// IPv6 is enabled if any remaining address is IPv6. The host IP is the first remaining address.
pub fn decide_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Result<(IpAddr, bool), DetectError> {
    let mut usable = addrs.iter().map(IpAddr::to_canonical).filter(|addr| !is_host_local(addr));
    let host_ip = usable.next().ok_or(DetectError::NoValidAddress)?;
    let enable_ipv6 = host_ip.is_ipv6() || (dual_stack && usable.any(|addr| addr.is_ipv6()));
    Ok((host_ip, enable_ipv6))
}

/// Go's `IsLoopback || IsLinkLocalUnicast || IsLinkLocalMulticast` on an unmapped address.
fn is_host_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let [first, second, third, _] = a.octets();
            first == 127 || (first, second) == (169, 254) || (first, second, third) == (224, 0, 0)
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            *a == Ipv6Addr::LOCALHOST || first & 0xffc0 == 0xfe80 || first & 0xff0f == 0xff02
        }
    }
}

/// Lists the current netns's interface addresses (IPv4 and IPv6, every interface including
/// `lo` and down ones, in the order the kernel returns them) and applies [`decide_ipv6`].
pub fn detect_ipv6(dual_stack: bool) -> Result<(IpAddr, bool), DetectError> {
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(|err| DetectError::List(err.to_string()))?
        .filter_map(|ifa| ifa.address.as_ref().and_then(sockaddr_ip))
        .collect();
    decide_ipv6(&addrs, dual_stack)
}

fn sockaddr_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
        (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::SockaddrLike as _;
    use std::io::Write as _;
    use std::net::{SocketAddrV4, SocketAddrV6};

    fn file_with(text: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text).unwrap();
        file
    }

    const PASSWD: &[u8] = b"\
# comment:x:1:1:::
root:x:0:0:root:/root:/bin/bash

   istio-proxy:x:1337:1337:Istio Proxy:/home/istio:/bin/sh   \r
short:x:5:5
+nis:x:7:7:::
-nis:x:8:8:::
baduid:x:abc:1:::
baduid:x:44:1:::
badgid:x:45:g:::
signed:x:+46:0:::
negative:x:-1:0:::
gecos\xff:x:9:9:\xff:/:/bin/sh
after:x:10:10:::
dup:x:11:11:::
dup:x:12:12:::
";

    #[test]
    fn lookup_uid_finds_users_like_go() {
        let file = file_with(PASSWD);
        let uid = |name| lookup_uid(file.path(), name);
        assert_eq!(uid("root"), Some(0));
        assert_eq!(uid("istio-proxy"), Some(1337));
        assert_eq!(uid("after"), Some(10));
        assert_eq!(uid("dup"), Some(11));
        assert_eq!(uid("baduid"), Some(44), "invalid uid line is skipped, not fatal");
        assert_eq!(uid("signed"), Some(46));
    }

    #[test]
    fn lookup_uid_rejects_what_go_rejects() {
        let file = file_with(PASSWD);
        let uid = |name| lookup_uid(file.path(), name);
        assert_eq!(uid("comment"), None);
        assert_eq!(uid("# comment"), None);
        assert_eq!(uid("short"), None);
        assert_eq!(uid("+nis"), None);
        assert_eq!(uid("-nis"), None);
        assert_eq!(uid("badgid"), None);
        assert_eq!(uid("negative"), None, "Go accepts -1 but it is no u32");
        assert_eq!(uid(""), None);
        assert_eq!(uid("nobody"), None);
        assert_eq!(lookup_uid(Path::new("/nonexistent/passwd"), "root"), None);
    }

    #[test]
    fn lookup_gid_finds_groups_like_go() {
        let file = file_with(
            b"# wheel:x:99:\nroot:x:0:\nistio-proxy:x:1337:a,b\n+nis:x:5:\nshort:x:6\n\
              bad:x:g:\nbad:x:7:\nempty::8:\n:x:9:\n",
        );
        let gid = |name| lookup_gid(file.path(), name);
        assert_eq!(gid("root"), Some(0));
        assert_eq!(gid("istio-proxy"), Some(1337));
        assert_eq!(gid("bad"), Some(7));
        assert_eq!(gid("empty"), Some(8));
        assert_eq!(gid("wheel"), None);
        assert_eq!(gid("+nis"), None);
        assert_eq!(gid("short"), None);
        assert_eq!(gid(""), None);
        assert_eq!(gid("missing"), None);
        assert_eq!(lookup_gid(Path::new("/nonexistent/group"), "root"), None);
    }

    #[test]
    fn resolv_conf_keeps_order_duplicates_and_verbatim_values() {
        let text = "\
# nameserver 9.9.9.9
; comment
nameserver 10.0.0.10
nameserver\t::1   # trailing comment
nameserver
  nameserver 10.0.0.10
nameserver\u{b}1.1.1.1
nameserverx 2.2.2.2
Nameserver 3.3.3.3
search svc.cluster.local
nameserver not-an-ip extra
nameserver 4.4.4.4\r
nameserver 5.5.5.5";
        assert_eq!(
            parse_resolv_conf_nameservers(text),
            ["10.0.0.10", "::1", "10.0.0.10", "1.1.1.1", "not-an-ip", "4.4.4.4", "5.5.5.5"]
        );
        assert!(parse_resolv_conf_nameservers("").is_empty());
    }

    #[test]
    fn dns_servers_split_by_family() {
        let entries: Vec<String> = [
            "10.0.0.10",
            "::127.0.0.53",
            "::ffff:1.2.3.4",
            "bogus",
            "010.0.0.1",
            "fe80::1%eth0",
            "FD00::A",
            "10.0.0.10",
        ]
        .map(String::from)
        .to_vec();
        let servers = split_dns_servers(&entries);
        assert_eq!(
            servers,
            DnsServers {
                v4: vec![Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 10)],
                v6: vec!["::7f00:35".parse().unwrap(), "::ffff:1.2.3.4".parse().unwrap(), "fd00::a".parse().unwrap(),],
            }
        );
        let printed: Vec<String> = servers.v6.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["::7f00:35", "::ffff:1.2.3.4", "fd00::a"]);
        assert_eq!(split_dns_servers(&[]), DnsServers::default());
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv6_decision_without_dual_stack_uses_first_usable_address() {
        let pod = ips(&["127.0.0.1", "10.244.0.5", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&pod, false), Ok(("10.244.0.5".parse().unwrap(), false)));
        let v6_only = ips(&["127.0.0.1", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&v6_only, false), Ok(("fd00::5".parse().unwrap(), true)));
    }

    #[test]
    fn ipv6_decision_with_dual_stack_scans_for_any_ipv6() {
        let pod = ips(&["127.0.0.1", "10.244.0.5", "10.1.0.1", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&pod, true), Ok(("10.244.0.5".parse().unwrap(), true)));
        let v4_only = ips(&["10.244.0.5", "fe80::1"]);
        assert_eq!(decide_ipv6(&v4_only, true), Ok(("10.244.0.5".parse().unwrap(), false)));
        let v6_first = ips(&["fd00::5", "10.0.0.1"]);
        assert_eq!(decide_ipv6(&v6_first, true), Ok(("fd00::5".parse().unwrap(), true)));
    }

    #[test]
    fn ipv6_decision_skips_host_local_addresses() {
        let skipped = ips(&[
            "127.0.0.1",
            "127.255.0.9",
            "169.254.1.1",
            "224.0.0.251",
            "::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff12::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.0.1",
        ]);
        assert_eq!(decide_ipv6(&skipped, true), Err(DetectError::NoValidAddress));
        assert_eq!(decide_ipv6(&[], false), Err(DetectError::NoValidAddress));

        let kept = ["::6", "240.240.240.240", "169.253.0.1", "224.0.1.1", "fec0::1", "ff05::1", "::ffff:0:0"];
        for addr in kept {
            let (host, _) = decide_ipv6(&ips(&[addr]), false).unwrap();
            assert_eq!(host, addr.parse::<IpAddr>().unwrap().to_canonical(), "{addr}");
        }
    }

    #[test]
    fn ipv6_decision_unmaps_ipv4_mapped_addresses() {
        let mapped = ips(&["::ffff:10.0.0.1", "fd00::1"]);
        assert_eq!(decide_ipv6(&mapped, false), Ok(("10.0.0.1".parse().unwrap(), false)));
    }

    #[test]
    fn detect_error_messages() {
        assert_eq!(DetectError::NoValidAddress.to_string(), "no valid local IP address found");
        assert_eq!(DetectError::List("EPERM".into()).to_string(), "failed to list interface addresses: EPERM");
    }

    #[test]
    fn sockaddr_ip_extracts_inet_families_only() {
        let v4 = SockaddrStorage::from(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 0));
        assert_eq!(sockaddr_ip(&v4), Some("10.0.0.1".parse().unwrap()));
        let v6 = SockaddrStorage::from(SocketAddrV6::new("fd00::1".parse().unwrap(), 0, 0, 0));
        assert_eq!(sockaddr_ip(&v6), Some("fd00::1".parse().unwrap()));
        let unix = nix::sys::socket::UnixAddr::new("/tmp/x").unwrap();
        // SAFETY: the pointer and length describe a live, initialised sockaddr_un.
        let unix = unsafe { SockaddrStorage::from_raw(unix.as_ptr().cast(), Some(unix.len())) };
        assert_eq!(sockaddr_ip(&unix.unwrap()), None);
    }

    #[test]
    fn detect_ipv6_reads_this_netns() {
        // The sandbox's addresses are unknown; only listing itself must work.
        match detect_ipv6(true) {
            Ok(_) | Err(DetectError::NoValidAddress) => {}
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
}
