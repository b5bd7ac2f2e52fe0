//! The `-save` parser a rerun reads the kernel's state with: any text, no panic, and a state
//! never differs from itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The executor reads `-save` output lossily as UTF-8; do the same.
    istio_iptables::fuzzing::parse_save(&String::from_utf8_lossy(data));
});
