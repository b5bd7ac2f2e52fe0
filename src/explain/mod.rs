//! `istio-iptables explain`: where does this connection go?
//!
//! Takes exactly the configuration a run would (flags, environment, resolv.conf, IPv6
//! decision, backend) and follows the first packet of a new connection through the rules that
//! run installs, as the kernel would: hooks, tables, chains, jumps and returns, loopback
//! re-entry, owner/mark/interface matches and conntrack zones. It reads the typed [`Plan`]; the
//! rules are shown in the backend's own syntax by the renderers.
//!
//! The packet is assumed to be a connection's first, with the proxy listening on the ports it
//! could be sent to (TPROXY without a listener is dropped by iptables and passed by nft).

mod matching;
mod output;
pub mod packet;
mod ruleset;
mod walk;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::cli::{self, Parsed};
use crate::config::{Config, InboundPorts, OwnerId};
use crate::error::{Error, Result};
use crate::plan::Plan;
use matching::{OwnerIds, PacketState};
use packet::{Direction, OutputFormat, PacketSpec, EXPLAIN_FLAGS};
pub use ruleset::Backend;
pub use walk::{Fate, Trace};

/// Runs `explain` with argv (program name first, the `explain` word removed).
pub fn run(argv: Vec<OsString>, env: &BTreeMap<String, String>, stdout: &mut dyn Write) -> Result<()> {
    // A bad explain flag is reported once logging is up, like any other failure of a run.
    let (run_argv, values) = match packet::split_argv(argv.clone()) {
        Ok(split) => (split.0, Ok(split.1)),
        Err(err) => (argv.into_iter().take(1).collect(), Err(err)),
    };
    let flags = match cli::parse(run_argv, env)? {
        Parsed::Run(flags) => flags,
        Parsed::Help(text) => return stdout.write_all(help(&text).as_bytes()).map_err(Error::Stdout),
        Parsed::Version(text) => return stdout.write_all(text.as_bytes()).map_err(Error::Stdout),
    };
    // Logging, the namespace and the host exactly as a run sets them up.
    let config = crate::configure(&flags, env)?;
    let args = packet::parse(&values?)?;
    let (backend, trace) = explain(&config, &args.packet);
    let text = match args.output {
        OutputFormat::Json => output::json(&args.packet, backend, &trace),
        OutputFormat::Text => {
            let roles = output::PortRoles {
                proxy_port: config.proxy_port.0,
                inbound_capture_port: config.inbound_capture_port.0,
            };
            output::text(&args.packet, backend, &trace, &roles)
        }
    };
    stdout.write_all(text.as_bytes()).map_err(Error::Stdout)
}

fn help(run_help: &str) -> String {
    let mut out = String::from(
        "Follow the first packet of a new connection through the rules a run with the same flags and\n\
         environment would install.\n\nUsage: istio-iptables explain [RUN FLAGS] --direction outbound|inbound --to ADDR:PORT [OPTIONS]\n\nExplain options:\n",
    );
    for (flag, help) in EXPLAIN_FLAGS {
        out.push_str(&format!("      --{flag:<14} {help}\n"));
    }
    out.push_str("\nRun flags (as for a run):\n");
    out.push_str(run_help);
    out
}

/// Follows `spec` through the rules `config` installs.
pub fn explain(config: &Config, spec: &PacketSpec) -> (Backend, Trace) {
    let backend = if config.native_nftables { Backend::Nftables } else { Backend::Iptables };
    // A run that skips the rule stage or only cleans up leaves no rules behind.
    let plan = if config.skip_rule_apply || config.cleanup_only {
        Plan { rules: vec![], enable_ipv6: config.enable_ipv6 }
    } else {
        Plan::build(config)
    };
    let family = if spec.to.is_ipv4() { crate::plan::Family::V4 } else { crate::plan::Family::V6 };
    let rules = ruleset::Ruleset::build(&plan, backend, family);
    let routes_tproxy = config.is_tproxy() && config.inbound_ports != InboundPorts::None;
    let walker =
        walk::Walker { rules: &rules, ids: &HostIds, tproxy_route_mark: routes_tproxy.then_some(config.tproxy_mark) };
    let mut trace = match spec.direction {
        Direction::Outbound => walker.outbound(initial_outbound(spec)),
        Direction::Inbound => walker.inbound(initial_inbound(spec)),
    };
    if family == crate::plan::Family::V6 && !plan.enable_ipv6 && backend == Backend::Iptables {
        let note = "IPv6 is off: a run installs no ip6tables rules".to_string();
        trace.steps.insert(1, walk::Step::Note(note));
    }
    (backend, trace)
}

fn is_loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    }
}

fn initial_outbound(spec: &PacketSpec) -> PacketState {
    let dst = spec.to.ip();
    let oif = spec.out_interface.as_ref().map_or_else(
        || if is_loopback(dst) { "lo".to_string() } else { "eth0".to_string() },
        |iface| iface.as_str().to_string(),
    );
    // Source selection over lo: lo's own address for loopback destinations, else the local
    // destination itself (the pod talking to its own IP).
    let src = spec.from.or_else(|| {
        (oif == "lo").then(|| match dst {
            IpAddr::V4(a) if a.is_loopback() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(a) if a.is_loopback() => Ipv6Addr::LOCALHOST.into(),
            other => other,
        })
    });
    PacketState {
        proto: spec.proto,
        src,
        sport: spec.from_port,
        dst,
        dport: spec.to.port(),
        iif: None,
        oif: Some(oif),
        owner: Some((spec.uid, spec.gid)),
        mark: 0,
        ct_mark: 0,
        ct_zone: None,
        tracked: false,
    }
}

fn initial_inbound(spec: &PacketSpec) -> PacketState {
    let iif = spec.in_interface.as_ref().map_or("eth0", |iface| iface.as_str()).to_string();
    PacketState {
        proto: spec.proto,
        src: spec.from,
        sport: spec.from_port,
        dst: spec.to.ip(),
        dport: spec.to.port(),
        iif: Some(iif),
        oif: None,
        owner: None,
        mark: 0,
        ct_mark: 0,
        ct_zone: None,
        tracked: false,
    }
}

/// Owner names resolve as iptables resolves them when it loads a rule.
struct HostIds;

impl OwnerIds for HostIds {
    fn uid(&self, id: &OwnerId) -> Option<u32> {
        id.as_str().parse().ok().or_else(|| crate::host::lookup_uid(Path::new("/etc/passwd"), id.as_str()))
    }

    fn gid(&self, id: &OwnerId) -> Option<u32> {
        id.as_str().parse().ok().or_else(|| crate::host::lookup_gid(Path::new("/etc/group"), id.as_str()))
    }
}

#[cfg(test)]
mod tests;
