//! Kernel feature probes, run in a throwaway network namespace on a helper thread.
//!
//! Probing writes rules, and writing with iptables-legacy instantiates legacy tables: in the
//! pod's own namespace that would make the next run's detection pick legacy (istio #61019).
//! So the probes never touch the target namespace: a helper thread `unshare(CLONE_NEWNET)`s
//! into a namespace of its own, the programs it starts inherit that namespace, and the
//! namespace disappears with the thread. Kernel modules are global, so what loads there is what
//! the pod gets. Without the privilege to create a namespace (CAP_SYS_ADMIN) nothing is probed.

use crate::exec::iptables::{Runner, Variant};
use crate::plan::{Family, Plan};

/// Why nothing could be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    #[error("cannot create a throwaway network namespace to probe in: {0}")]
    Unshare(#[source] nix::Error),
    #[error("cannot start the probe thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the probe thread panicked")]
    Panicked,
}

/// One feature of one iptables variant and family, and whether the kernel accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureProbe {
    pub program: String,
    pub family: Family,
    pub feature: &'static str,
    /// `None` when usable; else the restore's error.
    pub failure: Option<String>,
}

/// Everything probed in the throwaway namespace.
#[derive(Debug)]
pub struct Probes {
    pub iptables: Vec<FeatureProbe>,
    /// The native nftables ruleset of this configuration (`inet` tables, nat chains, redir,
    /// tproxy, ct zones as configured) committed over netlink: `None` when it committed, else
    /// the kernel's refusal. `None` in the outer option when there was no plan to try.
    pub nftables_inet: Option<Option<crate::nftnl::NftnlError>>,
}

/// The features a capture needs, each as a restore input that exercises it from the hook it
/// is used in (a target's table and hook checks run when a built-in chain jumps to it).
const FEATURES: [(&str, &str); 7] = [
    ("nat table", "*nat\n:DOCTOR_NAT - [0:0]\nCOMMIT\n"),
    ("mangle table", "*mangle\n:DOCTOR_MANGLE - [0:0]\nCOMMIT\n"),
    ("raw table", "*raw\n:DOCTOR_RAW - [0:0]\nCOMMIT\n"),
    (
        "REDIRECT",
        "*nat\n:DOCTOR_REDIRECT - [0:0]\n-A OUTPUT -p tcp -j DOCTOR_REDIRECT\n-A DOCTOR_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
    ),
    (
        "TPROXY",
        "*mangle\n:DOCTOR_TPROXY - [0:0]\n-A PREROUTING -p tcp -j DOCTOR_TPROXY\n-A DOCTOR_TPROXY -p tcp -j TPROXY --tproxy-mark 0x539/0xffffffff --on-port 15006\nCOMMIT\n",
    ),
    (
        "owner match",
        "*nat\n:DOCTOR_OWNER - [0:0]\n-A OUTPUT -j DOCTOR_OWNER\n-A DOCTOR_OWNER -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n",
    ),
    (
        "conntrack zones",
        "*raw\n:DOCTOR_ZONE - [0:0]\n-A OUTPUT -j DOCTOR_ZONE\n-A DOCTOR_ZONE -p udp --dport 53 -j CT --zone 1\nCOMMIT\n",
    ),
];

/// Runs the probes for the `(program prefix, variant, family)` triples whose restore program is
/// installed, and the native nftables commit of `plan`, in a namespace of their own.
pub fn run(variants: Vec<(String, Variant, Family)>, plan: Option<Plan>) -> Result<Probes, ProbeSetupError> {
    let probing = std::thread::Builder::new()
        .name("doctor-probe".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(ProbeSetupError::Unshare)?;
            Ok(probe_here(&variants, plan.as_ref()))
        })
        .map_err(ProbeSetupError::Spawn)?;
    // The thread's panic payload carries no error to keep; the panic itself was logged.
    probing.join().map_err(|_| ProbeSetupError::Panicked)?
}

/// The probes, in the current thread's (throwaway) namespace.
fn probe_here(variants: &[(String, Variant, Family)], plan: Option<&Plan>) -> Probes {
    let runner = Runner::default();
    let mut iptables = Vec::new();
    for (program, _, family) in variants {
        let restore = format!("{program}-restore");
        for (feature, input) in FEATURES {
            let failure = runner.run(&restore, &["--noflush"], Some(input), None).err().map(|e| e.xtables_text());
            iptables.push(FeatureProbe { program: program.clone(), family: *family, feature, failure });
        }
    }
    let nftables_inet = plan.map(|plan| crate::nftnl::apply(plan, &crate::nftnl::Options::default()).err());
    Probes { iptables, nftables_inet }
}
