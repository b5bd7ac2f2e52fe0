//! Renderers: pure functions from the plan to text.

pub mod iptables;
pub mod nft;
