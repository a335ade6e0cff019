//! A data-subject export: everything loyalty holds about one customer, read in one
//! consistent snapshot (a REPEATABLE READ, READ ONLY transaction), so a change committed
//! while the export runs is either wholly in it or wholly out of it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Context;
use crate::domain::ledger::LedgerEntry;
use crate::domain::member::{Member, MemberRef};
use crate::domain::reward::RewardRedemption;
use crate::store::ledger::StatementFilter;
use crate::store::lots::{Lot, LotState};
use crate::store::rewards::RedemptionFilter;
use crate::store::tiers::{TierChangeFilter, TierChangeRow};
use crate::store::{StoreResult, export, ledger, lots, members, rewards, tiers};

/// One membership with its whole history.
#[derive(Debug, Clone)]
pub struct MemberData {
    /// The member in the FULL view, as it stands at the export time.
    pub member: Member,
    /// Every ledger entry, in application order.
    pub ledger_entries: Vec<LedgerEntry>,
    /// Every lot, oldest first, as it stands at the export time.
    pub lots: Vec<Lot>,
    /// Tier history, oldest first.
    pub tier_changes: Vec<TierChangeRow>,
    /// Reward redemptions, oldest first.
    pub redemptions: Vec<RewardRedemption>,
}

/// Everything about one customer.
#[derive(Debug, Clone)]
pub struct CustomerData {
    /// The customer exported.
    pub customer_id: Uuid,
    /// Its memberships, in enrolment order (member id).
    pub members: Vec<MemberData>,
    /// The snapshot's time.
    pub export_time: DateTime<Utc>,
}

/// ExportCustomerData: everything loyalty holds about `customer_id` at the service clock's
/// now: the memberships linked to the
/// customer (whatever their status: a merged-away customer's MERGED membership still names
/// it) and the memberships merged into those (through any chain of merges), since after a
/// merge the survivor's data includes the merged customer's. An erased customer has none:
/// its memberships are anonymised, no longer linked to any id.
#[tracing::instrument(skip_all)]
pub async fn customer_data(ctx: &Context, customer_id: Uuid) -> StoreResult<CustomerData> {
    let now = ctx.now();
    let mut tx = custops_common::db::begin_snapshot(&ctx.pool).await?;
    let member_ids = export::memberships(&mut tx, customer_id).await?;
    let mut out = Vec::with_capacity(member_ids.len());
    for member_id in member_ids {
        let read = members::read(&mut tx, &MemberRef::Id(member_id), now).await?;
        let member = members::full_view(&mut tx, read, now).await?;
        let oldest_first = StatementFilter {
            oldest_first: true,
            ..StatementFilter::default()
        };
        let ledger_entries =
            ledger::statement(&mut *tx, member_id, &oldest_first, None, usize::MAX).await?;
        let every_state = [
            LotState::Pending,
            LotState::Available,
            LotState::Exhausted,
            LotState::Expired,
        ];
        let mut member_lots =
            lots::list(&mut *tx, member_id, &every_state, None, usize::MAX, now).await?;
        member_lots.sort_by_key(|l| (l.earn_time, l.point_lot_id));
        let own_changes = TierChangeFilter {
            member_id: Some(member_id),
            merged_members: false,
            ..TierChangeFilter::default()
        };
        let mut tier_changes = tiers::list(&mut *tx, &own_changes, None, usize::MAX).await?;
        tier_changes.reverse();
        let own_redemptions = RedemptionFilter {
            member_id: Some(member_id),
            ..RedemptionFilter::default()
        };
        let mut redemptions =
            rewards::list_redemptions(&mut *tx, &own_redemptions, None, usize::MAX).await?;
        redemptions.reverse();
        out.push(MemberData {
            member,
            ledger_entries,
            lots: member_lots,
            tier_changes,
            redemptions,
        });
    }
    tx.commit().await?;
    Ok(CustomerData {
        customer_id,
        members: out,
        export_time: now,
    })
}
