//! Kernel tests: the real binary applies real rules inside network namespaces these tests create
//! and delete themselves, and real sockets show where traffic lands. One test binary, so the
//! namespace harness (`tests/support`) is compiled once.
//!
//! Run one area or one test by name (a substring, as with any `cargo test` filter):
//!
//! ```sh
//! cargo test --test kernel -- rerun::             # one module
//! cargo test --test kernel -- same_argv_twice     # one scenario, every backend
//! cargo test --test kernel -- '::legacy'          # every per-backend test on iptables-legacy
//! cargo test --test kernel -- --list              # everything there is
//! ```
//!
//! Needs root, `ip` (iproute2) and the iptables/nftables programs. A test whose prerequisites
//! are missing is reported as `ignored (<reason>)`; with `ISTIO_IPTABLES_KERNEL_TESTS=require`
//! (set by CI) it fails instead.
//!
//! # Adding tests
//!
//! A test is a function returning [`Ran`]: it starts with its prerequisites
//! (`support::require_root()?`, `choice.available()?`, ...) and ends with `Ok(())`; assertions
//! panic as usual. Each module lists its tests once, in its `tests()` function:
//!
//! ```ignore
//! pub fn tests() -> Vec<Trial> {
//!     kernel_tests![
//!         plain_test,                                  // fn plain_test() -> Ran
//!         same_argv_twice: [legacy, nft, detected],    // fn same_argv_twice(choice: Choice) -> Ran
//!         tproxy_v6: [nft] => |choice| tproxy(choice, true),
//!         foreign_rule_ipv6_off => || mixed_state(Choice::Detected, false, false),
//!     ]
//! }
//! ```
//!
//! The per-backend form generates one test per backend, named `<module>::<test>::<backend>`:
//! `legacy` and `nft` force `--force-iptables-binary`, `detected` lets the binary detect it,
//! `native` runs `--native-nftables` (see `apply_support::Choice`).
//!
//! A new module is a file here with such a `tests()` function, and its name added to the
//! `kernel_modules!` line below: that one line declares the module and runs its tests.

#[path = "../apply_support/mod.rs"]
mod apply_support;
#[path = "../support/mod.rs"]
mod support;

use libtest_mimic::{Arguments, Completion, Trial};

use support::{Ran, Skip};

/// Wraps a test body: a [`Skip`] becomes `ignored (<reason>)` in the summary, a panic a failure.
fn trial(name: String, test: impl FnOnce() -> Ran + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || match test() {
        Ok(()) => Ok(Completion::Completed),
        Err(Skip(reason)) => Ok(Completion::ignored_with(reason)),
    })
}

/// `<module>::<test>` from the caller's `module_path!()` (`kernel::rerun` → `rerun`).
fn test_name(module_path: &str, parts: &[&str]) -> String {
    let module = module_path.rsplit("::").next().unwrap_or(module_path);
    std::iter::once(module).chain(parts.iter().copied()).collect::<Vec<_>>().join("::")
}

/// The backend a per-backend test runs on, by its name in a `kernel_tests!` list.
macro_rules! choice {
    (legacy) => {
        $crate::apply_support::Choice::Forced($crate::support::Backend::Legacy)
    };
    (nft) => {
        $crate::apply_support::Choice::Forced($crate::support::Backend::Nft)
    };
    (detected) => {
        $crate::apply_support::Choice::Detected
    };
    (native) => {
        $crate::apply_support::Choice::Native
    };
}

/// The list of a module's tests; see the module documentation for the forms.
macro_rules! kernel_tests {
    ($($name:ident $(: [$($backend:ident),+ $(,)?])? $(=> $body:expr)?),* $(,)?) => {{
        let groups: Vec<Vec<libtest_mimic::Trial>> = vec![$(kernel_tests!(@one $name $(: [$($backend),+])? $(=> $body)?)),*];
        groups.into_iter().flatten().collect::<Vec<_>>()
    }};
    (@one $name:ident : [$($backend:ident),+] => $body:expr) => {
        vec![$($crate::trial(
            $crate::test_name(module_path!(), &[stringify!($name), stringify!($backend)]),
            move || ($body)(choice!($backend)),
        )),+]
    };
    (@one $name:ident : [$($backend:ident),+]) => {
        vec![$($crate::trial(
            $crate::test_name(module_path!(), &[stringify!($name), stringify!($backend)]),
            move || $name(choice!($backend)),
        )),+]
    };
    (@one $name:ident => $body:expr) => {
        vec![$crate::trial($crate::test_name(module_path!(), &[stringify!($name)]), $body)]
    };
    (@one $name:ident) => {
        vec![$crate::trial($crate::test_name(module_path!(), &[stringify!($name)]), $name)]
    };
}

/// Declares each test module and runs the tests of all of them.
macro_rules! kernel_modules {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*

        fn main() {
            let mut trials = Vec::new();
            $(trials.extend($module::tests());)*
            libtest_mimic::run(&Arguments::from_args(), trials).exit();
        }
    };
}

kernel_modules![commands, detect, harness_smoke, iptables, nftables, rerun, routes, validation];
