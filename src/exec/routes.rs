//! TPROXY policy routing and the `::6` source address (apply.md §4), shared by both backends.
//!
//! Placeholder for the netlink implementation on the `apply` branch, which replaces this file
//! when merged (same signature). It drives `ip` so the nftables backend can be tested end to
//! end meanwhile; unlike upstream it does not add a duplicate `ip rule` on reruns.

use std::process::Command;

use crate::config::{Config, InboundPorts};
use crate::error::{Error, Result};

/// Adds `::6/128` to `lo` when IPv6 is on, and for TPROXY with inbound ports the fwmark rule
/// and the `local` default route of the TPROXY route table, per family.
pub fn configure(config: &Config) -> Result<()> {
    if config.enable_ipv6 {
        ip_ignoring_exists(&["-6", "addr", "add", "::6/128", "dev", "lo"], "failed to add IPv6 inbound address")?;
        tracing::info!("Added ::6 address on the loopback iface");
    }
    if matches!(config.inbound_ports, InboundPorts::None) || !config.is_tproxy() {
        return Ok(());
    }
    let (mark, table) = (config.tproxy_mark.to_string(), config.tproxy_route_table.to_string());
    let families: &[(&str, &str)] =
        if config.enable_ipv6 { &[("-4", "0.0.0.0/0"), ("-6", "::/0")] } else { &[("-4", "0.0.0.0/0")] };
    for (family, default) in families {
        let existing =
            ip(&[family, "rule", "list", "fwmark", &mark, "lookup", &table], "failed to configure netlink rule")?;
        if existing.trim().is_empty() {
            ip(&[family, "rule", "add", "fwmark", &mark, "lookup", &table], "failed to configure netlink rule")?;
        }
        ip_ignoring_exists(
            &[family, "route", "add", "local", default, "dev", "lo", "table", &table],
            "failed to add route",
        )?;
    }
    Ok(())
}

fn ip(args: &[&str], context: &str) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| Error::Apply(format!("failed to configure routes: {context}: ip: {err}")))?;
    if !output.status.success() {
        return Err(Error::Apply(format!(
            "failed to configure routes: {context}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ip_ignoring_exists(args: &[&str], context: &str) -> Result<()> {
    match ip(args, context) {
        // EEXIST, as netlink reports it and as `ip addr` words it.
        Err(Error::Apply(message))
            if message.to_lowercase().contains("file exists") || message.contains("already assigned") =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}
