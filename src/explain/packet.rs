//! The packet an `explain` run follows, and the explain-only flags that describe it.
//!
//! The explain flags are taken out of argv here; everything else is handed, untouched, to the
//! run's own parser, so every run flag and environment variable means what it means for a run.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};

use crate::config::IfaceName;
use crate::plan::Proto;

/// A packet description that cannot be followed; names the explain flag at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for --{flag}: {reason}")]
pub struct BadPacket {
    pub flag: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl BadPacket {
    fn new(flag: &'static str, value: &str, reason: &'static str) -> Self {
        BadPacket { flag, value: value.to_string(), reason }
    }
}

impl From<BadPacket> for crate::Error {
    fn from(err: BadPacket) -> Self {
        crate::Error::invalid(&format!("--{}", err.flag), &err.value, err.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by a local process.
    Outbound,
    /// Arriving on an interface.
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The first packet of a new connection, as described on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSpec {
    pub direction: Direction,
    pub proto: Proto,
    pub to: SocketAddr,
    pub from: Option<IpAddr>,
    pub from_port: Option<u16>,
    /// Socket owner of an outbound packet.
    pub uid: u32,
    pub gid: u32,
    /// Inbound: the arrival interface (default `eth0`).
    pub in_interface: Option<IfaceName>,
    /// Outbound: the interface routing picks (default `lo` for loopback destinations, else `eth0`).
    pub out_interface: Option<IfaceName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainArgs {
    pub packet: PacketSpec,
    pub output: OutputFormat,
}

/// The explain-only flags (long form only; none clashes with a run flag).
pub const EXPLAIN_FLAGS: [(&str, &str); 9] = [
    ("direction", "outbound|inbound (required): sent by a local process, or arriving on an interface"),
    ("to", "ADDR:PORT (required): the destination; IPv6 as [ADDR]:PORT"),
    ("from", "ADDR[:PORT]: the source (default: unknown; a loopback source for loopback destinations)"),
    ("protocol", "tcp|udp (default tcp)"),
    ("uid", "N: the sending socket's uid, outbound only (default 0)"),
    ("gid", "N: the sending socket's gid, outbound only (default 0)"),
    ("in-interface", "NAME: the interface an inbound packet arrives on (default eth0)"),
    (
        "out-interface",
        "NAME: the interface an outbound packet is routed to (default lo for loopback destinations, else eth0)",
    ),
    ("output", "text|json (default text)"),
];

/// An explain flag as given: its name and raw value.
pub type FlagValue = (&'static str, String);

/// Splits argv (program name first, `explain` word already removed) into the run's argv and
/// the raw explain flag values, in the order given (the last occurrence wins, as for run flags).
pub fn split_argv(argv: Vec<OsString>) -> Result<(Vec<OsString>, Vec<FlagValue>), BadPacket> {
    let names: Vec<&'static str> = EXPLAIN_FLAGS.iter().map(|(flag, _)| *flag).collect();
    let (run, found) = crate::subcommand::split_own_flags(argv, &names);
    let explain = found
        .into_iter()
        .map(|(flag, value)| {
            value.map(|value| (flag, value)).ok_or_else(|| BadPacket::new(flag, "", "the flag needs a value"))
        })
        .collect::<Result<_, _>>()?;
    Ok((run, explain))
}

/// Turns the raw explain flag values into a packet description.
pub fn parse(values: &[FlagValue]) -> Result<ExplainArgs, BadPacket> {
    let last = |flag: &str| values.iter().rev().find(|(f, _)| *f == flag).map(|(f, v)| (*f, v.as_str()));
    let (flag, raw) =
        last("direction").ok_or_else(|| BadPacket::new("direction", "", "required: outbound or inbound"))?;
    let direction = match raw {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => return Err(BadPacket::new(flag, raw, "expected outbound or inbound")),
    };
    let (flag, raw) = last("to").ok_or_else(|| BadPacket::new("to", "", "required: the destination ADDR:PORT"))?;
    let to: SocketAddr =
        raw.parse().map_err(|_| BadPacket::new(flag, raw, "expected ADDR:PORT (IPv6 as [ADDR]:PORT)"))?;
    if to.port() == 0 {
        return Err(BadPacket::new(flag, raw, "port 0 is not a connection destination"));
    }
    let (from, from_port) = match last("from") {
        None => (None, None),
        Some((flag, raw)) => {
            let (addr, port) = match raw.parse::<SocketAddr>() {
                // As for bind(2), a source port 0 leaves the port to the kernel: unspecified.
                Ok(sock) => (sock.ip(), Some(sock.port()).filter(|&port| port != 0)),
                Err(_) => (
                    raw.parse::<IpAddr>()
                        .map_err(|_| BadPacket::new(flag, raw, "expected ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)"))?,
                    None,
                ),
            };
            if addr.is_ipv4() != to.is_ipv4() {
                return Err(BadPacket::new(flag, raw, "the source must be of the same IP family as --to"));
            }
            (Some(addr), port)
        }
    };
    let proto = match last("protocol") {
        None | Some((_, "tcp")) => Proto::Tcp,
        Some((_, "udp")) => Proto::Udp,
        Some((flag, raw)) => return Err(BadPacket::new(flag, raw, "expected tcp or udp")),
    };
    let outbound_only = |name: &'static str| -> Result<Option<(&'static str, &str)>, BadPacket> {
        match last(name) {
            Some((flag, raw)) if direction == Direction::Inbound => {
                Err(BadPacket::new(flag, raw, "applies to --direction outbound only"))
            }
            other => Ok(other),
        }
    };
    let id = |found: Option<(&'static str, &str)>| -> Result<u32, BadPacket> {
        match found {
            None => Ok(0),
            Some((flag, raw)) => {
                raw.parse().map_err(|_| BadPacket::new(flag, raw, "expected a numeric id (0-4294967295)"))
            }
        }
    };
    let uid = id(outbound_only("uid")?)?;
    let gid = id(outbound_only("gid")?)?;
    let iface = |found: Option<(&'static str, &str)>| -> Result<Option<IfaceName>, BadPacket> {
        found
            .map(|(flag, raw)| {
                IfaceName::parse(flag, raw).map_err(|_| {
                    BadPacket::new(
                        flag,
                        raw,
                        "expected an interface name of at most 15 characters from A-Z a-z 0-9 _ - .",
                    )
                })
            })
            .transpose()
    };
    let out_interface = iface(outbound_only("out-interface")?)?;
    let in_interface = match last("in-interface") {
        Some((flag, raw)) if direction == Direction::Outbound => {
            return Err(BadPacket::new(flag, raw, "applies to --direction inbound only"))
        }
        found => iface(found)?,
    };
    let output = match last("output") {
        None | Some((_, "text")) => OutputFormat::Text,
        Some((_, "json")) => OutputFormat::Json,
        Some((flag, raw)) => return Err(BadPacket::new(flag, raw, "expected text or json")),
    };
    let packet = PacketSpec { direction, proto, to, from, from_port, uid, gid, in_interface, out_interface };
    Ok(ExplainArgs { packet, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parse_args(args: &[&str]) -> Result<ExplainArgs, BadPacket> {
        let (_, values) = split_argv(os(args))?;
        parse(&values)
    }

    #[test]
    fn explain_flags_are_taken_out_and_run_flags_stay_with_their_values() {
        let (run, explain) = split_argv(os(&[
            "x",
            "-p",
            "--to",
            "--to=1.2.3.4:80",
            "-n",
            "--envoy-port",
            "--uid",
            "--uid",
            "7",
            "-np",
            "--output",
            "--",
            "--direction",
            "inbound",
        ]))
        .unwrap();
        assert_eq!(
            run,
            os(&["x", "-p", "--to", "-n", "--envoy-port", "--uid", "-np", "--output", "--", "--direction", "inbound"])
        );
        assert_eq!(explain, vec![("to", "1.2.3.4:80".to_string()), ("uid", "7".to_string())]);
    }

    #[test]
    fn a_full_description_parses() {
        let args = parse_args(&[
            "x",
            "--direction",
            "outbound",
            "--to",
            "[fd00::1]:53",
            "--from=[fd00::2]:4000",
            "--protocol",
            "udp",
            "--uid",
            "1337",
            "--gid=1338",
            "--out-interface",
            "lo",
            "--output",
            "json",
        ])
        .unwrap();
        let packet = args.packet;
        assert_eq!(packet.to, "[fd00::1]:53".parse().unwrap());
        assert_eq!((packet.from, packet.from_port), (Some("fd00::2".parse().unwrap()), Some(4000)));
        assert_eq!((packet.proto, packet.uid, packet.gid), (Proto::Udp, 1337, 1338));
        assert_eq!(packet.out_interface.as_ref().map(IfaceName::as_str), Some("lo"));
        assert_eq!(args.output, OutputFormat::Json);
    }

    #[test]
    fn a_source_port_0_is_an_unspecified_source_port() {
        let args = parse_args(&["x", "--direction", "inbound", "--to", "1.2.3.4:80", "--from", "5.6.7.8:0"]).unwrap();
        assert_eq!((args.packet.from, args.packet.from_port), (Some("5.6.7.8".parse().unwrap()), None));
    }

    #[test]
    fn bad_descriptions_name_the_flag() {
        let err = |args: &[&str]| parse_args(args).unwrap_err().flag;
        assert_eq!(err(&["x", "--to", "1.2.3.4:80"]), "direction");
        assert_eq!(err(&["x", "--direction", "sideways", "--to", "1.2.3.4:80"]), "direction");
        assert_eq!(err(&["x", "--direction", "inbound"]), "to");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "1.2.3.4"]), "to");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "1.2.3.4:0"]), "to");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "[::1]:0"]), "to");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "1.2.3.4:80", "--from", "::1"]), "from");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "1.2.3.4:80", "--protocol", "sctp"]), "protocol");
        assert_eq!(err(&["x", "--direction", "inbound", "--to", "1.2.3.4:80", "--uid", "1"]), "uid");
        assert_eq!(err(&["x", "--direction", "outbound", "--to", "1.2.3.4:80", "--gid", "-1"]), "gid");
        assert_eq!(
            err(&["x", "--direction", "outbound", "--to", "1.2.3.4:80", "--in-interface", "eth0"]),
            "in-interface"
        );
        assert_eq!(
            err(&["x", "--direction", "outbound", "--to", "1.2.3.4:80", "--out-interface", "a b"]),
            "out-interface"
        );
        assert_eq!(err(&["x", "--direction", "outbound", "--to", "1.2.3.4:80", "--output", "yaml"]), "output");
        assert_eq!(err(&["x", "--direction"]), "direction");
    }
}
