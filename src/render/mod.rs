//! Renderers: pure functions from the plan to text, and the typed restore input
//! ([`restore::RestoreInput`]) whose renderer is the only writer of iptables-restore text.

pub mod iptables;
pub mod nft;
pub mod restore;
pub mod save;
