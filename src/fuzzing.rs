//! Entry points for the `cargo fuzz` targets in `fuzz/`, for code the public API does not reach.
//! Not part of the supported API.

/// The `-save` parser, compiled here a second time so the fuzz targets reach it without widening
/// the executor's visibility (clippy's `duplicate_mod` is exactly that, and meant). If the
/// executor's parser moves, this path must follow it.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "exec/iptables/state.rs"]
mod save_state;

/// Parses `-save` output (or restore input) as a rerun reads the kernel's state, and checks what
/// must hold for any input: a state compared with itself never differs.
#[doc(hidden)]
pub fn parse_save(text: &str) {
    let state = save_state::State::parse(text);
    let verdict = save_state::compare(&state, &state);
    assert_ne!(verdict, save_state::Comparison::Differs, "a state differs from itself: {state:?}");
    assert_eq!(verdict == save_state::Comparison::Clean, !state.has_entries());
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_save_accepts_real_and_broken_dumps() {
        super::parse_save("*nat\n:ISTIO_INBOUND - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\nCOMMIT\n");
        super::parse_save("-A\n*\n:\n*nat\n-A\n-I ''\nCOMMIT");
        super::parse_save("");
    }
}
