//! The TPROXY tail: marks that let the proxy's own loopback traffic and established inbound
//! connections bypass TPROXY, emitted whether or not any inbound port is captured.

use super::addresses::{inbound_passthrough_source, loopback};
use super::{Chain, Families, Family, Owner, PlanBuilder, Position, RuleKind, Table, Verdict, OUTBOUND_MARK};
use crate::config::Config;

pub(super) fn tail(plan: &mut PlanBuilder, config: &Config) {
    if !config.is_tproxy() {
        return;
    }
    let (mangle, mark) = (Table::Mangle, config.tproxy_mark);
    plan.append(mangle, Chain::Prerouting, RuleKind::SaveMark(mark));
    plan.append(mangle, Chain::Output, RuleKind::LoopbackOutMarked { mark, verdict: Verdict::Return });
    let uids = config.proxy_uids.iter().map(|u| Owner::Uid(u.clone()));
    for owner in uids.chain(config.proxy_gids.iter().map(|g| Owner::Gid(g.clone()))) {
        plan.append_versioned(mangle, Chain::Output, |family| RuleKind::MarkProxyLoopback {
            owner: owner.clone(),
            not_destination: loopback(config, family),
            mark: OUTBOUND_MARK,
        });
    }
    plan.append(mangle, Chain::Output, RuleKind::RestoreMark(mark));

    // Inserted after the inbound appends, so they end up first in ISTIO_INBOUND.
    plan.insert(mangle, Chain::IstioInbound, 1, RuleKind::TcpMarked { mark, verdict: Verdict::Return });
    for family in [Family::V4, Family::V6] {
        let kind = RuleKind::LoopbackInFrom { source: inbound_passthrough_source(family), verdict: Verdict::Return };
        plan.push(Families::only(family), mangle, Chain::IstioInbound, Position::Insert(2), kind);
    }
    plan.insert(
        mangle,
        Chain::IstioInbound,
        3,
        RuleKind::LoopbackInNotMarked { mark: OUTBOUND_MARK, verdict: Verdict::Return },
    );
}
