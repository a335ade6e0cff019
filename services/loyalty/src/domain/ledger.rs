//! The points ledger: commands, entries, and the rules for spending lots first-expiring
//! first and for what a reversal may take back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::earning::{Calculation, Purchase};
use super::member::{Balances, MemberRef};
use super::program::ClawbackPolicy;
use super::rejection::Rejection;

/// Checks a request id: 1–128 printable ASCII characters.
pub fn parse_request_id(id: &str) -> Result<String, String> {
    if id.is_empty() {
        Err("request_id is required (1-128 printable ASCII characters; a UUID is ideal)".into())
    } else if id.len() > 128 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Err("request_id must be 1-128 printable ASCII characters".into())
    } else {
        Ok(id.to_owned())
    }
}

/// What an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Earned.
    Earn,
    /// Spent.
    Redeem,
    /// Corrected.
    Adjust,
    /// Reversed an earn or a redeem.
    Reverse,
    /// Expired.
    Expire,
    /// Released from pending.
    Release,
    /// Received from a member merged into this one.
    MergeIn,
    /// Moved into the surviving member.
    MergeOut,
    /// Forfeited when the member was closed.
    Forfeit,
    /// Given back to a restored member by a profiles unmerge.
    UnmergeIn,
    /// Taken back from the surviving member by a profiles unmerge.
    UnmergeOut,
}

impl EntryKind {
    /// Stored code (matches the contract's enum numbers).
    pub fn code(self) -> i16 {
        match self {
            EntryKind::Earn => 1,
            EntryKind::Redeem => 2,
            EntryKind::Adjust => 3,
            EntryKind::Reverse => 4,
            EntryKind::Expire => 5,
            EntryKind::Release => 6,
            EntryKind::MergeIn => 7,
            EntryKind::MergeOut => 8,
            EntryKind::Forfeit => 9,
            EntryKind::UnmergeIn => 10,
            EntryKind::UnmergeOut => 11,
        }
    }

    /// From the stored code.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => EntryKind::Earn,
            2 => EntryKind::Redeem,
            3 => EntryKind::Adjust,
            4 => EntryKind::Reverse,
            5 => EntryKind::Expire,
            6 => EntryKind::Release,
            7 => EntryKind::MergeIn,
            8 => EntryKind::MergeOut,
            9 => EntryKind::Forfeit,
            10 => EntryKind::UnmergeIn,
            11 => EntryKind::UnmergeOut,
            _ => return None,
        })
    }

    /// Contract name.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Earn => "EARN",
            EntryKind::Redeem => "REDEEM",
            EntryKind::Adjust => "ADJUST",
            EntryKind::Reverse => "REVERSE",
            EntryKind::Expire => "EXPIRE",
            EntryKind::Release => "RELEASE",
            EntryKind::MergeIn => "MERGE_IN",
            EntryKind::MergeOut => "MERGE_OUT",
            EntryKind::Forfeit => "FORFEIT",
            EntryKind::UnmergeIn => "UNMERGE_IN",
            EntryKind::UnmergeOut => "UNMERGE_OUT",
        }
    }
}

/// Kind-specific details kept with an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryDetails {
    /// A purchase earn.
    PurchaseEarn {
        /// The purchase.
        purchase: Purchase,
        /// Its calculation.
        calculation: Calculation,
    },
    /// A merge: the other member and the profiles merge.
    Merge {
        /// The other member.
        other_member_id: Uuid,
        /// Its customer id then.
        other_customer_id: Uuid,
        /// The profiles merge id.
        merge_id: String,
    },
    /// A reward redemption (REDEEM) or its reversal.
    RewardRedemption {
        /// Redemption id.
        reward_redemption_id: Uuid,
        /// Reward id.
        reward_id: Uuid,
        /// Reward name then.
        reward_display_name: String,
        /// Units.
        quantity: i32,
    },
}

/// What a REVERSE entry reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    /// The entry reversed.
    pub reversed_entry_id: Uuid,
    /// Its kind.
    pub reversed_kind: EntryKind,
    /// Points asked for.
    pub requested_points: i64,
    /// Points not taken back (clawback policy).
    pub waived_points: i64,
    /// Points of a reversed redemption not returned because their lots expired.
    pub expired_points: i64,
    /// Refund amount when reversed by amount.
    pub refund_amount_minor: Option<i64>,
    /// Policy applied.
    pub clawback: Option<ClawbackPolicy>,
}

/// One immutable ledger line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Id.
    pub ledger_entry_id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// Member's customer.
    pub customer_id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Program currency.
    pub currency: String,
    /// Kind.
    pub kind: EntryKind,
    /// Change of available points.
    pub available_delta: i64,
    /// Change of pending points.
    pub pending_delta: i64,
    /// Change of qualifying points.
    pub qualifying_delta: i64,
    /// Change of qualifying spend.
    pub spend_delta_minor: i64,
    /// Member-readable reason.
    pub reason: String,
    /// Machine-readable reason.
    pub reason_code: String,
    /// Calling service.
    pub caller: String,
    /// Caller's request id.
    pub request_id: String,
    /// Operator.
    pub operator_id: String,
    /// Caller's reference.
    pub external_reference: String,
    /// Order id of a purchase earn.
    pub order_id: Option<String>,
    /// Committed at.
    pub create_time: DateTime<Utc>,
    /// Lot expiry for entries that created one.
    pub expire_time: Option<DateTime<Utc>>,
    /// Release time for entries that created a pending lot.
    pub release_time: Option<DateTime<Utc>>,
    /// Balances after.
    pub balances_after: Balances,
    /// Points still reversible (EARN and RedeemPoints' REDEEM).
    pub reversible_points: i64,
    /// Details.
    pub details: Option<EntryDetails>,
    /// Reversal details for REVERSE entries.
    pub reversal: Option<Reversal>,
}

impl LedgerEntry {
    /// Signed change of total points. Stored entries were added up with overflow checks when
    /// they were written, so this never saturates; it saturates rather than panic on a read.
    pub fn points(&self) -> i64 {
        self.available_delta.saturating_add(self.pending_delta)
    }
}

/// Fields every ledger mutation carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryContext {
    /// Member-readable reason (empty = the operation's default).
    pub reason: String,
    /// Machine-readable reason.
    pub reason_code: String,
    /// Operator.
    pub operator_id: String,
}

/// What an earn is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarnSource {
    /// A purchase through the earning rules.
    Purchase(Purchase),
    /// An explicit grant.
    Grant {
        /// Points, > 0.
        points: i64,
        /// Whether they qualify for tiers.
        qualifying: bool,
        /// Expiry override.
        expire_time: Option<DateTime<Utc>>,
    },
}

/// A validated EarnPoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarnCommand {
    /// Member.
    pub member: MemberRef,
    /// Source.
    pub source: EarnSource,
    /// Reason etc.
    pub context: EntryContext,
}

/// A validated RedeemPoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemCommand {
    /// Member.
    pub member: MemberRef,
    /// Points, > 0.
    pub points: i64,
    /// Reason etc.
    pub context: EntryContext,
    /// Caller's reference.
    pub external_reference: String,
}

/// A validated AdjustPoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustCommand {
    /// Member.
    pub member: MemberRef,
    /// Signed points.
    pub points: i64,
    /// Signed qualifying points.
    pub qualifying_points: i64,
    /// Reason etc.
    pub context: EntryContext,
}

/// Which entry to reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReverseTarget {
    /// By id.
    Entry(Uuid),
    /// By the request id the same caller used.
    OriginalRequest(String),
    /// By the order of a purchase earn.
    Order {
        /// Program.
        program_id: Uuid,
        /// Order id.
        order_id: String,
    },
}

/// How much to reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReverseAmount {
    /// Everything still reversible.
    AllRemaining,
    /// Points.
    Points(i64),
    /// A refunded amount of a purchase earn.
    Refund {
        /// Minor units.
        amount_minor: i64,
        /// Currency as sent.
        currency: String,
    },
}

/// A validated ReversePoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseCommand {
    /// Target.
    pub target: ReverseTarget,
    /// Amount.
    pub amount: ReverseAmount,
    /// Reason etc.
    pub context: EntryContext,
}

/// A lot with points left, as spending sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotBalance {
    /// Lot id.
    pub point_lot_id: Uuid,
    /// Points left.
    pub remaining: i64,
}

/// Takes `points` from `lots` (already in spending order: first expiring, then first earned)
/// and returns how much comes from each. The caller has checked the total is enough.
pub fn allocate_fifo(lots: &[LotBalance], points: i64) -> Vec<(Uuid, i64)> {
    let mut left = points;
    let mut taken = Vec::new();
    for lot in lots {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        if take > 0 {
            taken.push((lot.point_lot_id, take));
            left -= take;
        }
    }
    taken
}

/// Refuses a spend larger than the available balance, with the shortfall.
pub fn check_sufficient(available: i64, requested: i64) -> Result<(), Rejection> {
    if requested > available {
        Err(Rejection::InsufficientPoints {
            available: available.max(0),
            requested,
            shortfall: requested - available.max(0),
        })
    } else {
        Ok(())
    }
}

/// How a reversal of an earn splits between taken back and waived under `policy`:
/// `own_lot_remaining` points left in the earn's own lot (`own_lot_pending` when it is still
/// inside the return window, so not part of `available`), `available` the member's spendable
/// balance. Returns (taken from the own lot, taken from other lots, taken into a negative
/// balance, waived).
pub fn clawback_split(
    policy: ClawbackPolicy,
    requested: i64,
    own_lot_remaining: i64,
    own_lot_pending: bool,
    available: i64,
) -> (i64, i64, i64, i64) {
    match policy {
        ClawbackPolicy::PendingOnly => {
            let own = if own_lot_pending {
                own_lot_remaining.min(requested)
            } else {
                0
            };
            (own, 0, 0, requested - own)
        }
        ClawbackPolicy::WithinBalance => {
            let own = own_lot_remaining.min(requested);
            let others_available = others_available(available, own, own_lot_pending);
            let others = others_available.min(requested - own);
            (own, others, 0, requested - own - others)
        }
        ClawbackPolicy::AllowNegativeBalance => {
            let own = own_lot_remaining.min(requested);
            let others_available = others_available(available, own, own_lot_pending);
            let others = others_available.min(requested - own);
            (own, others, requested - own - others, 0)
        }
    }
}

/// The available points outside the reversed earn's own lot: a pending lot is not part of
/// the available balance, an available one is.
fn others_available(available: i64, own: i64, own_lot_pending: bool) -> i64 {
    if own_lot_pending {
        available.max(0)
    } else {
        (available - own).max(0)
    }
}

/// The points a refund of `refund_minor` takes back from an earn of `points` for a purchase
/// of `purchase_minor`, of which `refunded_minor` was refunded before and `reversed_points`
/// reversed: pro rata, and the last refund takes exactly what remains.
pub fn refund_points(
    points: i64,
    purchase_minor: i64,
    refunded_minor: i64,
    reversed_points: i64,
    refund_minor: i64,
) -> i64 {
    let left = points.saturating_sub(reversed_points);
    if i128::from(refunded_minor) + i128::from(refund_minor) >= i128::from(purchase_minor) {
        return left;
    }
    pro_rata(points, refund_minor, purchase_minor).min(left)
}

/// `value × part / whole`, rounded toward zero, computed in i128 (points × minor units do not
/// fit i64: 10^12 points of a 10^15 purchase); `whole` ≤ 0 gives 0. With `|part| ≤ whole` the
/// result is within `value`, so the conversion back never saturates.
pub fn pro_rata(value: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let exact = i128::from(value) * i128::from(part) / i128::from(whole);
    i64::try_from(exact).unwrap_or(if exact < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(n: u128, remaining: i64) -> LotBalance {
        LotBalance {
            point_lot_id: Uuid::from_u128(n),
            remaining,
        }
    }

    #[test]
    fn fifo_takes_the_first_lots_first() {
        let lots = [lot(1, 10), lot(2, 5), lot(3, 20)];
        assert_eq!(
            allocate_fifo(&lots, 12),
            vec![(Uuid::from_u128(1), 10), (Uuid::from_u128(2), 2)]
        );
        assert_eq!(allocate_fifo(&lots, 10), vec![(Uuid::from_u128(1), 10)]);
    }

    #[test]
    fn shortfall_is_what_is_missing() {
        assert_eq!(
            check_sufficient(30, 50),
            Err(Rejection::InsufficientPoints {
                available: 30,
                requested: 50,
                shortfall: 20
            })
        );
        assert_eq!(check_sufficient(50, 50), Ok(()));
    }

    #[test]
    fn clawback_policies() {
        use ClawbackPolicy::*;
        assert_eq!(
            clawback_split(PendingOnly, 100, 100, false, 100),
            (0, 0, 0, 100)
        );
        assert_eq!(
            clawback_split(PendingOnly, 100, 60, true, 100),
            (60, 0, 0, 40)
        );
        assert_eq!(
            clawback_split(WithinBalance, 100, 40, false, 70),
            (40, 30, 0, 30)
        );
        assert_eq!(
            clawback_split(AllowNegativeBalance, 100, 40, false, 70),
            (40, 30, 30, 0)
        );
        // A pending own lot is not part of the available balance.
        assert_eq!(
            clawback_split(WithinBalance, 100, 40, true, 70),
            (40, 60, 0, 0)
        );
        assert_eq!(
            clawback_split(WithinBalance, 100, 40, true, 20),
            (40, 20, 0, 40)
        );
        assert_eq!(
            clawback_split(AllowNegativeBalance, 100, 40, true, 20),
            (40, 20, 40, 0)
        );
    }

    #[test]
    fn refunds_are_pro_rata_and_the_last_takes_the_rest() {
        assert_eq!(refund_points(100, 3_000, 0, 0, 1_000), 33);
        assert_eq!(refund_points(100, 3_000, 1_000, 33, 1_000), 33);
        assert_eq!(refund_points(100, 3_000, 2_000, 66, 1_000), 34);
    }

    #[test]
    fn pro_rata_shares_of_the_largest_amounts_are_exact() {
        let points = crate::domain::limits::MAX_ENTRY_POINTS;
        let amount = crate::domain::limits::MAX_AMOUNT_MINOR;
        // 10^15 × 333,333,333,333 / 10^12: the product is ~3.3 × 10^26.
        assert_eq!(pro_rata(amount, points / 3, points), 333_333_333_333_000);
        assert_eq!(pro_rata(points, amount - 1, amount), points - 1);
        assert_eq!(refund_points(points, amount, 0, 0, amount / 2), points / 2);
        assert_eq!(pro_rata(5, 1, 0), 0);
    }
}
