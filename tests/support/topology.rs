//! Two namespaces, "app" (where the rules under test go, like a pod) and
//! "peer" (the rest of the network), joined by a veth pair.
//!
//! ```text
//!   app netns                               peer netns
//!   eth0 10.248.0.1/24  <-- veth -->  eth0 10.248.0.2/24
//!        fd00:248::1/64                    fd00:248::2/64
//!   default via peer                       10.248.1.0/24, fd00:248:1::/64 via app
//! ```
//!
//! The app's default route lets it "reach" any address (connect() fails with
//! ENETUNREACH before netfilter sees the packet if there is no route). The
//! peer's routes towards the app let it send to addresses the app does not
//! own, which is what a transparent (TPROXY) proxy must intercept.
//!
//! Neighbours are static (fixed MACs, permanent entries): right after a veth
//! comes up, the end brought up last has no IPv6 multicast route for about a
//! second and drops neighbour solicitations, which turned every first IPv6
//! connection into a 1 s retransmission.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Netns;

/// Interface name on both sides, like a pod's.
pub const IFACE: &str = "eth0";

/// An address the peer routes through the app but nobody owns.
pub const PEER_ROUTED_V4: Ipv4Addr = Ipv4Addr::new(10, 248, 1, 50);
/// IPv6 counterpart of [`PEER_ROUTED_V4`].
pub const PEER_ROUTED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 1, 0, 0, 0, 0, 0x50);

const APP_MAC: &str = "02:00:0a:f8:00:01";
const PEER_MAC: &str = "02:00:0a:f8:00:02";
const APP_V4: Ipv4Addr = Ipv4Addr::new(10, 248, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 248, 0, 2);
const APP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, 2);

#[derive(Clone, Copy, Debug, Default)]
pub struct TopologyOptions {
    /// Also configure IPv6 addresses and routes.
    pub ipv6: bool,
    /// Configure IPv6 only (implies `ipv6`): no IPv4 address on eth0.
    pub ipv6_only: bool,
}

impl TopologyOptions {
    pub fn ipv4() -> Self {
        Self::default()
    }

    pub fn dual_stack() -> Self {
        Self { ipv6: true, ipv6_only: false }
    }

    pub fn ipv6_only() -> Self {
        Self { ipv6: true, ipv6_only: true }
    }

    fn has_v4(self) -> bool {
        !self.ipv6_only
    }

    fn has_v6(self) -> bool {
        self.ipv6 || self.ipv6_only
    }
}

/// The two namespaces; both are deleted (taking the veth pair with them)
/// when the topology is dropped.
#[derive(Debug)]
pub struct Topology {
    pub app: Netns,
    pub peer: Netns,
    pub app_v4: Option<Ipv4Addr>,
    pub peer_v4: Option<Ipv4Addr>,
    pub app_v6: Option<Ipv6Addr>,
    pub peer_v6: Option<Ipv6Addr>,
}

impl Topology {
    pub fn new(options: TopologyOptions) -> Topology {
        let app = Netns::new("app");
        let peer = Netns::new("peer");
        for ns in [&app, &peer] {
            // IPv4 devconf is inherited from the host namespace; a strict
            // host rp_filter would make results depend on the machine.
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
            ns.loopback_up();
        }
        // Created from inside the app namespace so the host never sees it.
        let peer_end = ["name", IFACE, "address", PEER_MAC, "netns", peer.name()];
        let mut link = vec!["link", "add", IFACE, "address", APP_MAC, "type", "veth", "peer"];
        link.extend(peer_end);
        app.exec_ok("ip", link);

        let mut topology = Topology { app, peer, app_v4: None, peer_v4: None, app_v6: None, peer_v6: None };
        if options.has_v4() {
            topology.configure_v4();
        }
        if options.has_v6() {
            topology.configure_v6();
        }
        for ns in [&topology.app, &topology.peer] {
            ns.exec_ok("ip", ["link", "set", IFACE, "up"]);
        }
        topology.add_routes();
        topology
    }

    fn configure_v4(&mut self) {
        add_address(&self.app, &format!("{APP_V4}/24"), &[]);
        add_address(&self.peer, &format!("{PEER_V4}/24"), &[]);
        add_neighbour(&self.app, PEER_V4.into(), PEER_MAC);
        add_neighbour(&self.peer, APP_V4.into(), APP_MAC);
        self.app_v4 = Some(APP_V4);
        self.peer_v4 = Some(PEER_V4);
    }

    fn configure_v6(&mut self) {
        // nodad: otherwise the addresses stay "tentative" (unusable) for
        // about a second after the link comes up.
        add_address(&self.app, &format!("{APP_V6}/64"), &["nodad"]);
        add_address(&self.peer, &format!("{PEER_V6}/64"), &["nodad"]);
        add_neighbour(&self.app, PEER_V6.into(), PEER_MAC);
        add_neighbour(&self.peer, APP_V6.into(), APP_MAC);
        self.app_v6 = Some(APP_V6);
        self.peer_v6 = Some(PEER_V6);
    }

    /// Needs the links up: the kernel refuses gateways it cannot reach yet.
    fn add_routes(&self) {
        if let (Some(app), Some(peer)) = (self.app_v4, self.peer_v4) {
            route(&self.app, "-4", "default", peer.into());
            route(&self.peer, "-4", "10.248.1.0/24", app.into());
        }
        if let (Some(app), Some(peer)) = (self.app_v6, self.peer_v6) {
            route(&self.app, "-6", "default", peer.into());
            route(&self.peer, "-6", "fd00:248:1::/64", app.into());
        }
    }

    /// The app's address to use in tests: IPv4 unless IPv6-only.
    pub fn app_ip(&self) -> IpAddr {
        pick(self.app_v4, self.app_v6)
    }

    /// The peer's address to use in tests: IPv4 unless IPv6-only.
    pub fn peer_ip(&self) -> IpAddr {
        pick(self.peer_v4, self.peer_v6)
    }

    pub fn app_ip_v6(&self) -> IpAddr {
        IpAddr::V6(self.app_v6.expect("topology has no IPv6; use TopologyOptions::dual_stack()"))
    }

    pub fn peer_ip_v6(&self) -> IpAddr {
        IpAddr::V6(self.peer_v6.expect("topology has no IPv6; use TopologyOptions::dual_stack()"))
    }
}

fn pick(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> IpAddr {
    v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)).expect("topology has at least one address family")
}

fn add_address(ns: &Netns, cidr: &str, flags: &[&str]) {
    let mut args = vec!["addr", "add", cidr, "dev", IFACE];
    args.extend_from_slice(flags);
    ns.exec_ok("ip", args);
}

fn add_neighbour(ns: &Netns, ip: IpAddr, mac: &str) {
    ns.exec_ok("ip", ["neigh", "replace", &ip.to_string(), "lladdr", mac, "dev", IFACE, "nud", "permanent"]);
}

fn route(ns: &Netns, family: &str, destination: &str, gateway: IpAddr) {
    ns.exec_ok("ip", [family, "route", "add", destination, "via", &gateway.to_string()]);
}
