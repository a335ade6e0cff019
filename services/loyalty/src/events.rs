//! Domain events → `custops.loyalty.v1` event messages in the outbox, appended in the
//! transaction that made the change (`workflow` hands them over before its commit).

use custops_common::outbox::{self, OutboxEvent};
use custops_contracts::custops::loyalty::v1 as pb;
use sqlx::PgConnection;

use crate::domain::event::{Event, MembersMerged, MembersUnmerged};
use crate::wire::customer;
use crate::wire::members::{pending_downgrade_pb, status_pb};
use crate::wire::tiers::tier_change_pb;

/// Appends `events` to the outbox, in order, with one statement.
pub async fn append(conn: &mut PgConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    outbox::append_all(conn, &outbox_events(events)).await
}

/// `events` as the outbox rows they are appended as, in order.
pub fn outbox_events(events: &[Event]) -> Vec<OutboxEvent> {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let outbox_event = match event.clone() {
            Event::MemberEnrolled(m) => {
                let id = m.member_id;
                OutboxEvent::new(
                    "member",
                    id,
                    &pb::MemberEnrolled {
                        member: Some(m.into()),
                    },
                )
            }
            Event::PointsEarned(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsEarned {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::PointsRedeemed(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsRedeemed {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::PointsAdjusted(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsAdjusted {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::PointsReversed(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsReversed {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::PointsExpired(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsExpired {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::PointsReleased(m, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::PointsReleased {
                    member: Some(m.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::MembersUnmerged(unmerge) => {
                let MembersUnmerged {
                    restored,
                    surviving,
                    restored_customer_id,
                    surviving_customer_id,
                    unmerge_in,
                    merge_id,
                } = *unmerge;
                OutboxEvent::new(
                    "member",
                    restored.member_id,
                    &pb::MembersUnmerged {
                        restored_member: Some(restored.into()),
                        surviving_member: surviving.map(Into::into),
                        restored_customer_id: customer(restored_customer_id),
                        surviving_customer_id: customer(surviving_customer_id),
                        unmerge_in_entry: unmerge_in.map(Into::into),
                        merge_id,
                    },
                )
            }
            Event::TierChanged(m, change) => {
                let change = tier_change_pb(&m, change, &m.currency);
                OutboxEvent::new(
                    "member",
                    m.member_id,
                    &pb::TierChanged {
                        member: Some(m.into()),
                        tier_change: Some(change),
                    },
                )
            }
            Event::TierDowngradeScheduled(m) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::TierDowngradeScheduled {
                    member: Some(m.into()),
                },
            ),
            Event::TierDowngradeCancelled(m, cancelled) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::TierDowngradeCancelled {
                    member: Some(m.into()),
                    cancelled_downgrade: Some(pending_downgrade_pb(cancelled)),
                },
            ),
            Event::MembersMerged(merge) => {
                let MembersMerged {
                    surviving,
                    merged,
                    merge_in,
                    merge_id,
                } = *merge;
                OutboxEvent::new(
                    "member",
                    surviving.member_id,
                    &pb::MembersMerged {
                        surviving_customer_id: customer(surviving.customer_id),
                        merged_customer_id: customer(merged.customer_id),
                        surviving_member: Some(surviving.into()),
                        merged_member: Some(merged.into()),
                        merge_in_entry: Some(merge_in.into()),
                        merge_id,
                    },
                )
            }
            Event::MemberStatusChanged {
                member,
                previous,
                forfeit,
            } => OutboxEvent::new(
                "member",
                member.member_id,
                &pb::MemberStatusChanged {
                    member: Some(member.into()),
                    previous_status: status_pb(previous) as i32,
                    forfeit_entry: forfeit.map(Into::into),
                    previous_customer_id: String::new(),
                },
            ),
            Event::RewardRedemptionReversed(m, r, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::RewardRedemptionReversed {
                    member: Some(m.into()),
                    reward_redemption: Some(r.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
            Event::RewardRedeemed(m, r, e) => OutboxEvent::new(
                "member",
                m.member_id,
                &pb::RewardRedeemed {
                    member: Some(m.into()),
                    reward_redemption: Some(r.into()),
                    ledger_entry: Some(e.into()),
                },
            ),
        };
        rows.push(outbox_event);
    }
    rows
}
