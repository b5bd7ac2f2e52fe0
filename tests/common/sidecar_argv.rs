//! The argv Istio's injection template gives `istio-init` (apply.md §7.1), without the leading
//! `istio-iptables` word and the logging flag; tests append what they need. Shared by the CLI
//! and kernel tests through `#[path]`, so neither compiles the other's helpers.

/// The default sidecar's `istio-init` arguments.
pub const SIDECAR_ARGV: [&str; 16] = [
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// The sidecar argv followed by `extra`.
pub fn sidecar_argv_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SIDECAR_ARGV.iter().copied().chain(extra.iter().copied()).collect()
}
