//! Tests of the real binary that need no privileges: the command-line surface and the files
//! shipped around it. One test binary; each module is one area:
//!
//! - `command_line`: help, version, errors and exit codes, where output goes, how flags and the
//!   environment combine;
//! - `bad_input`: the corpus `testdata/bad-input.tsv` of values that must be rejected;
//! - `docs`: the man page and shell completions `istio-iptables-docs` generates;
//! - `explain`: `istio-iptables explain`'s errors, and that a plain run is not one;
//! - `examples`: the Kubernetes examples, Dockerfile and README agree with each other and with
//!   the binary;
//! - `report`: the JSON object `--report` writes.
//!
//! `cargo test --test cli -- docs::` runs one module, `cargo test --test cli -- version` one test.

mod bad_input;
mod command_line;
mod docs;
mod examples;
mod explain;
mod report;
#[path = "../common/sidecar_argv.rs"]
mod sidecar_argv;
