//! Which chains belong to netfilter and which to Istio: the one answer every stage uses.

/// The chains iptables creates in its tables; never declared, flushed or deleted by us.
const BUILT_IN_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// Targets iptables provides besides chains; a jump to one declares nothing.
const BUILT_IN_VERDICTS: [&str; 3] = ["ACCEPT", "RETURN", "DROP"];

/// The filter chain that holds the guardrails (`exec/iptables/guardrail.rs`): not upstream's,
/// and no configuration's. It is `ISTIO_…` so that `-save` readers and `check` see it as
/// Istio's; the apply flow splits it off the state before anything compares chains.
pub const GUARDRAIL: &str = "ISTIO_GUARDRAIL";

/// Whether `chain` is one of the five built-in chains.
pub fn is_built_in(chain: &str) -> bool {
    BUILT_IN_CHAINS.contains(&chain)
}

/// Whether a `-j` target needs no `-N` declaration: a built-in chain or verdict.
pub fn is_built_in_target(target: &str) -> bool {
    is_built_in(target) || BUILT_IN_VERDICTS.contains(&target)
}

/// Whether `chain` is Istio's. Every chain upstream creates is named `ISTIO_…`
/// (`tools/istio-iptables/pkg/constants/constants.go`); upstream's state parser tests the looser
/// `ISTIO`, which would also claim a foreign `ISTIOX` chain and flush it in a cleanup.
pub fn is_istio(chain: &str) -> bool {
    chain.starts_with("ISTIO_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_chains_are_the_istio_underscore_ones() {
        assert!(is_istio("ISTIO_OUTPUT"));
        assert!(!is_istio("ISTIOX"));
        assert!(!is_istio("OUTPUT"));
        assert!(is_istio(GUARDRAIL));
    }

    #[test]
    fn built_in_chains_and_verdicts() {
        assert!(is_built_in("PREROUTING"));
        assert!(!is_built_in("RETURN"));
        assert!(is_built_in_target("RETURN"));
        assert!(!is_built_in_target("ISTIO_REDIRECT"));
    }
}
