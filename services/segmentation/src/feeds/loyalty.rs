//! The loyalty feed: member snapshots (tier, points, qualifying points, enrolment) into
//! `loyalty_memberships`, tier codes into `loyalty_tiers`. Every member event carries the
//! member after the change, so the handler keeps the latest snapshot per member (by feed
//! sequence) whatever the event; members merged away, closed or anonymised are dropped.

use std::sync::Arc;

use custops_common::clock::Clock;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::loyalty::v1 as pb;

use prost::{Message, Name};
use sqlx::PgConnection;

use super::{FactsFeed, Pending, payload, position};
use crate::store::facts::{self, Feed, MemberSnapshot};
use crate::wire::from_timestamp;
use crate::workflow::membership::Changed;

/// Applies loyalty events to the facts projection.
#[derive(Debug, Clone)]
pub struct LoyaltyFeed {
    clock: Arc<dyn Clock>,
}

impl LoyaltyFeed {
    /// A handler timing its effects with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

/// The member snapshots an event carries (merges carry two).
fn members(event: &Event) -> anyhow::Result<Vec<pb::Member>> {
    let bytes = payload(event)?;
    let kind = event.event_type.as_str();
    macro_rules! one {
        ($($t:ident),*) => {
            $(if kind == pb::$t::full_name() {
                return Ok(pb::$t::decode(bytes)?.member.into_iter().collect());
            })*
        };
    }
    one!(
        MemberEnrolled,
        MemberStatusChanged,
        PointsEarned,
        PointsRedeemed,
        PointsAdjusted,
        PointsReversed,
        PointsExpired,
        PointsReleased,
        TierChanged,
        TierDowngradeScheduled,
        TierDowngradeCancelled,
        RewardRedeemed,
        RewardRedemptionReversed
    );
    if kind == pb::MembersMerged::full_name() {
        let m = pb::MembersMerged::decode(bytes)?;
        return Ok(m
            .merged_member
            .into_iter()
            .chain(m.surviving_member)
            .collect());
    }
    if kind == pb::MembersUnmerged::full_name() {
        let m = pb::MembersUnmerged::decode(bytes)?;
        return Ok(m
            .surviving_member
            .into_iter()
            .chain(m.restored_member)
            .collect());
    }
    Ok(Vec::new())
}

fn snapshot(m: pb::Member) -> MemberSnapshot {
    let active = !m.anonymized
        && matches!(
            m.status(),
            pb::MemberStatus::Active | pb::MemberStatus::Suspended
        );
    let balances = m.balances.unwrap_or_default();
    MemberSnapshot {
        member_id: m.member_id,
        loyalty_program_id: m.program_id,
        customer_id: m.customer_id,
        active,
        tier: m.tier.map(|t| t.tier_code).unwrap_or_default(),
        points: balances.available_points,
        qualifying_points: balances.qualifying_points,
        enroll_time: from_timestamp(m.enrol_time.as_ref()),
    }
}

facts_feed_handler!(LoyaltyFeed);

#[tonic::async_trait]
impl FactsFeed for LoyaltyFeed {
    const FEED: &'static str = "loyalty";
    const LOST_ON_RESYNC: &'static str = "member snapshots (tier, points, qualifying points, enrolment) of members whose events were pruned, until their next event; members closed, merged or anonymised meanwhile stay in the facts";

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let kind = event.event_type.as_str();
        if kind == pb::ProgramCreated::full_name() || kind == pb::ProgramUpdated::full_name() {
            let program = if kind == pb::ProgramCreated::full_name() {
                pb::ProgramCreated::decode(payload(event)?)?.program
            } else {
                pb::ProgramUpdated::decode(payload(event)?)?.program
            };
            if let Some(p) = program {
                let tiers: Vec<String> = p.tiers.into_iter().map(|t| t.tier_code).collect();
                facts::record_tiers(tx, &p.program_id, &tiers).await?;
            }
            return Ok(());
        }
        let mut touched = Vec::new();
        for member in members(event)? {
            for customer in facts::apply_member(&mut *tx, &snapshot(member), event.sequence).await?
            {
                if !touched.contains(&customer) {
                    touched.push(customer);
                }
            }
        }
        // Sorted: customers are locked in one order everywhere (`facts::lock_customer`).
        touched.sort();
        for customer in touched {
            facts::ensure_row(&mut *tx, &customer, now).await?;
            pending.touch(
                &customer,
                position(Feed::Loyalty, event),
                event,
                now,
                Changed::LOYALTY,
            );
        }
        Ok(())
    }
}
