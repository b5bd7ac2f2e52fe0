//! Entry points for the `cargo fuzz` targets in `fuzz/`, for code the public API does not reach.
//! Not part of the supported API.

use crate::exec::iptables::state as save_state;

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
