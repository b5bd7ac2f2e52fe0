//! Facts read from the host: passwd/group entries, resolv.conf nameservers and the netns's
//! interface addresses.
//!
//! Reading ([`HostFacts::read`]) is kept apart from deciding: the configuration stage is a pure
//! function of the flags and a [`HostFacts`] value, so tests and benchmarks can inject any host.
//!
//! Nothing here goes through NSS, so a statically linked binary sees the same answers as a
//! dynamically linked one (upstream is a static Go binary with the same property).

use std::fs::OpenOptions;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::socket::SockaddrStorage;

use crate::error::{ConfigError, Error, ReadError, Result};
use crate::gocompat::parse_go_addr;

/// The largest host file (`/etc/passwd`, `/etc/group` via [`lookup_gid`], resolv.conf) the tool
/// reads. Real ones are
/// a few KiB; the cap keeps a misconfigured path (`/dev/zero`, a huge log) from exhausting an
/// init container's memory limit.
pub const MAX_HOST_FILE_BYTES: u64 = 1 << 20;

/// Where the host facts live; tests point these elsewhere.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub passwd: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths { passwd: PathBuf::from("/etc/passwd") }
    }
}

/// What a configuration needs to know about the host; decided from the flags alone, so that
/// nothing is read that upstream would not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNeeds {
    /// `/etc/passwd`, to find `$ENVOY_USER`'s uid when `--proxy-uid` is empty.
    pub passwd: bool,
    /// The interface addresses, to decide IPv6 when `ENABLE_INBOUND_IPV6` does not.
    pub interface_addresses: bool,
    /// The resolv.conf whose nameservers DNS capture redirects.
    pub resolv_conf: Option<PathBuf>,
}

/// The host as the configuration sees it. Only what [`HostNeeds`] asked for is filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `/etc/passwd` contents; `None` when not needed or not readable (the uid then falls back
    /// to 1337, as upstream's lookup failure does).
    pub passwd: Option<String>,
    /// The netns's interface addresses in kernel order, every interface including `lo`.
    pub interface_addresses: Vec<IpAddr>,
    /// resolv.conf contents (lossily decoded: a comment in another encoding must not make the
    /// file unreadable).
    pub resolv_conf: Option<String>,
}

impl HostFacts {
    /// Reads what `needs` asks for. A missing or unreadable passwd file is not an error (the uid
    /// falls back); one that is not a regular file or is over the size cap is.
    pub fn read(needs: &HostNeeds, paths: &HostPaths) -> Result<HostFacts> {
        let mut facts = HostFacts::default();
        if needs.passwd {
            facts.passwd = match read_host_file(&paths.passwd) {
                Ok(text) => Some(text),
                Err(ReadError::Io(err)) => {
                    tracing::debug!("cannot read {}: {err}; using the default proxy uid", paths.passwd.display());
                    None
                }
                Err(source) => return Err(Error::ReadFile { path: paths.passwd.clone(), source }),
            };
        }
        if needs.interface_addresses {
            facts.interface_addresses = interface_addresses().map_err(ConfigError::ListAddresses)?;
        }
        if let Some(path) = &needs.resolv_conf {
            let text = read_host_file(path).map_err(|source| Error::ReadFile { path: path.clone(), source })?;
            facts.resolv_conf = Some(text);
        }
        Ok(facts)
    }
}

/// Reads a host file, refusing anything that is not a regular file (a FIFO would block, a device
/// like `/dev/zero` never ends) or is larger than [`MAX_HOST_FILE_BYTES`], in bounded memory.
/// Non-UTF-8 bytes are replaced, not fatal.
pub fn read_host_file(path: &Path) -> Result<String, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new().read(true).custom_flags(OFlag::O_NONBLOCK.bits()).open(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        let kind = match () {
            () if file_type.is_dir() => "a directory",
            () if file_type.is_fifo() => "a FIFO",
            () if file_type.is_char_device() => "a character device",
            () if file_type.is_block_device() => "a block device",
            () if file_type.is_socket() => "a socket",
            () => "a special file",
        };
        return Err(ReadError::NotRegularFile(kind));
    }
    // One byte past the cap tells "exactly at the cap" from "over it", even if the file grows
    // between the stat and the read.
    let mut bytes = Vec::new();
    file.take(MAX_HOST_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_HOST_FILE_BYTES {
        return Err(ReadError::TooLarge { limit: MAX_HOST_FILE_BYTES });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Looks up a user's numeric uid by name in a passwd-format file
/// (`name:pw:uid:gid:gecos:home:shell`). Used for `ENVOY_USER`; the caller falls back to 1337.
///
/// Follows Go's pure-Go `os/user` reader: lines are trimmed, blank and `#` lines skipped, and a
/// line only counts if it has all seven fields, its name does not start with `+`/`-` (NIS
/// entries), and both uid and gid are integers. The first such line for the name decides.
pub fn lookup_uid(passwd_path: &Path, user: &str) -> Option<u32> {
    uid_in_passwd(&read_host_file(passwd_path).ok()?, user)
}

/// [`lookup_uid`] over passwd-format text.
pub fn uid_in_passwd(text: &str, user: &str) -> Option<u32> {
    let uid = colon_file_lines(text).find_map(|line| {
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
    gid_in_group_file(&read_host_file(group_path).ok()?, group)
}

/// [`lookup_gid`] over group-format text.
pub fn gid_in_group_file(text: &str, group: &str) -> Option<u32> {
    let gid = colon_file_lines(text).find_map(|line| {
        let fields: Vec<&str> = line.splitn(4, ':').collect();
        let [name, _, gid, _] = fields[..] else {
            return None;
        };
        (is_lookup_name(name, group) && is_go_int(gid)).then_some(gid)
    })?;
    gid.parse().ok()
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

/// resolv.conf nameservers (upstream `tools/common/config`, via miekg/dns): each line is split on whitespace, and a line whose
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

/// Splits nameserver entries by family (upstream `tools/common/config`). IPv4-mapped IPv6 stays IPv6.
///
/// Unparsable entries are dropped as upstream does. An IPv6 entry's zone is dropped (the server
/// is kept): upstream copies the zone into an iptables `-d` argument, which iptables-restore
/// rejects, failing the whole run. Keeping the server keeps upstream's decision that DNS capture
/// is on.
pub fn split_dns_servers(entries: &[String]) -> DnsServers {
    let mut servers = DnsServers::default();
    for entry in entries {
        match parse_go_addr(entry) {
            Ok((IpAddr::V4(addr), _)) => servers.v4.push(addr),
            Ok((IpAddr::V6(addr), Some(zone))) => {
                tracing::warn!("nameserver {entry}: ignoring the zone %{zone}, which a netfilter rule cannot match");
                servers.v6.push(addr);
            }
            Ok((IpAddr::V6(addr), None)) => servers.v6.push(addr),
            Err(err) => tracing::debug!("ignoring nameserver {entry}: {err}"),
        }
    }
    servers
}

/// Upstream's IPv6 decision (`tools/common/config`, `pkg/util/net/ip.go`) over addresses in kernel
/// order. Returns `(host_ip, enable_ipv6)`, or `None` when no address is usable.
///
/// IPv4-mapped addresses are unmapped; loopback, link-local unicast and link-local multicast
/// addresses are skipped. Without dual stack the first remaining address decides; with it,
/// IPv6 is enabled if any remaining address is IPv6. The host IP is the first remaining address.
pub fn decide_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Option<(IpAddr, bool)> {
    let mut usable = addrs.iter().map(IpAddr::to_canonical).filter(|addr| !is_host_local(addr));
    let host_ip = usable.next()?;
    let enable_ipv6 = host_ip.is_ipv6() || (dual_stack && usable.any(|addr| addr.is_ipv6()));
    Some((host_ip, enable_ipv6))
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
/// `lo` and down ones, in the order the kernel returns them).
pub fn interface_addresses() -> Result<Vec<IpAddr>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?.filter_map(|ifa| ifa.address.as_ref().and_then(sockaddr_ip)).collect())
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
                v6: ["::7f00:35", "::ffff:1.2.3.4", "fe80::1", "fd00::a"].map(|s| s.parse().unwrap()).to_vec(),
            }
        );
        let printed: Vec<String> = servers.v6.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["::7f00:35", "::ffff:1.2.3.4", "fe80::1", "fd00::a"]);
        assert_eq!(split_dns_servers(&[]), DnsServers::default());
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv6_decision_without_dual_stack_uses_first_usable_address() {
        let pod = ips(&["127.0.0.1", "10.244.0.5", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&pod, false), Some(("10.244.0.5".parse().unwrap(), false)));
        let v6_only = ips(&["127.0.0.1", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&v6_only, false), Some(("fd00::5".parse().unwrap(), true)));
    }

    #[test]
    fn ipv6_decision_with_dual_stack_scans_for_any_ipv6() {
        let pod = ips(&["127.0.0.1", "10.244.0.5", "10.1.0.1", "::1", "fd00::5", "fe80::1"]);
        assert_eq!(decide_ipv6(&pod, true), Some(("10.244.0.5".parse().unwrap(), true)));
        let v4_only = ips(&["10.244.0.5", "fe80::1"]);
        assert_eq!(decide_ipv6(&v4_only, true), Some(("10.244.0.5".parse().unwrap(), false)));
        let v6_first = ips(&["fd00::5", "10.0.0.1"]);
        assert_eq!(decide_ipv6(&v6_first, true), Some(("fd00::5".parse().unwrap(), true)));
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
        assert_eq!(decide_ipv6(&skipped, true), None);
        assert_eq!(decide_ipv6(&[], false), None);

        let kept = ["::6", "240.240.240.240", "169.253.0.1", "224.0.1.1", "fec0::1", "ff05::1", "::ffff:0:0"];
        for addr in kept {
            let (host, _) = decide_ipv6(&ips(&[addr]), false).unwrap();
            assert_eq!(host, addr.parse::<IpAddr>().unwrap().to_canonical(), "{addr}");
        }
    }

    #[test]
    fn ipv6_decision_unmaps_ipv4_mapped_addresses() {
        let mapped = ips(&["::ffff:10.0.0.1", "fd00::1"]);
        assert_eq!(decide_ipv6(&mapped, false), Some(("10.0.0.1".parse().unwrap(), false)));
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
    fn interface_addresses_lists_this_netns() {
        // The sandbox's addresses are unknown, but every netns has `lo` with 127.0.0.1 (or none
        // at all when `lo` is down and unconfigured); listing itself must work.
        let addrs = interface_addresses().expect("getifaddrs");
        assert!(addrs.iter().all(|a| a.is_ipv4() || a.is_ipv6()));
    }

    #[test]
    fn host_files_are_read_whole_up_to_the_cap() {
        let file = file_with(b"nameserver 10.0.0.10\n\xff# not utf-8\n");
        assert_eq!(read_host_file(file.path()).unwrap(), "nameserver 10.0.0.10\n\u{fffd}# not utf-8\n");
        let at_cap = file_with(&vec![b'#'; MAX_HOST_FILE_BYTES as usize]);
        assert_eq!(read_host_file(at_cap.path()).unwrap().len() as u64, MAX_HOST_FILE_BYTES);
        let over = file_with(&vec![b'#'; MAX_HOST_FILE_BYTES as usize + 1]);
        let err = read_host_file(over.path()).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { limit: MAX_HOST_FILE_BYTES }), "{err:?}");
        assert_eq!(err.to_string(), "larger than the 1048576-byte limit for host files");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let err = read_host_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (a character device)");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_host_file(dir.path()).unwrap_err().to_string(), "not a regular file (a directory)");
        // A FIFO with no writer: a blocking open would hang this test forever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read_host_file(&fifo).unwrap_err().to_string(), "not a regular file (a FIFO)");
        assert!(matches!(read_host_file(&dir.path().join("missing")), Err(ReadError::Io(_))));
    }

    #[test]
    fn facts_are_read_only_when_needed() {
        let paths = HostPaths { passwd: "/dev/zero".into() };
        assert_eq!(HostFacts::read(&HostNeeds::default(), &paths).unwrap(), HostFacts::default());
        let needs = HostNeeds { passwd: true, ..HostNeeds::default() };
        let err = HostFacts::read(&needs, &paths).unwrap_err().to_string();
        assert_eq!(err, "failed to load /dev/zero: not a regular file (a character device)");
        let missing = HostPaths { passwd: "/nonexistent/passwd".into() };
        assert_eq!(HostFacts::read(&needs, &missing).unwrap().passwd, None, "a missing passwd falls back");
        let resolv = file_with(b"nameserver 1.1.1.1\n");
        let needs = HostNeeds { resolv_conf: Some(resolv.path().to_path_buf()), ..HostNeeds::default() };
        let facts = HostFacts::read(&needs, &missing).unwrap();
        assert_eq!(facts.resolv_conf.as_deref(), Some("nameserver 1.1.1.1\n"));
        let needs = HostNeeds { resolv_conf: Some("/dev/zero".into()), ..HostNeeds::default() };
        let err = HostFacts::read(&needs, &missing).unwrap_err();
        assert_eq!(err.to_string(), "failed to load /dev/zero: not a regular file (a character device)");
        assert_eq!(err.exit_code(), 1);
    }
}
