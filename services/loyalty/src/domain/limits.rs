//! The largest amounts loyalty takes and keeps, chosen so that no sum the service computes
//! can leave `i64` (≈ 9.2 × 10^18), and the refusal when a member would pass them.
//!
//! Requests are bounded where they are parsed (`api/<area>.rs`, INVALID_ARGUMENT naming the
//! field); what only the stored state decides (points a purchase earns under the program's
//! rules, a balance after many earns, a reward's stock) is refused here or in the store. The
//! margins are wide on both sides: a real program never comes near these limits, and the
//! largest of them still leaves i64 room for tens of thousands of them to be added up (merges
//! add whole balances, SQL sums add lots and ledger entries).

use super::ledger::EntryKind;
use super::member::Balances;
use super::rejection::Rejection;

/// Largest money amount a request carries, in minor units: 10^15 (ten trillion in the major
/// unit of a currency with two decimals): purchases, purchase lines, refunds, spend thresholds.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Largest number of points a request names (a grant, a redemption, an adjustment either
/// way, a reward's cost): 10^9.
pub const MAX_REQUEST_POINTS: i64 = 1_000_000_000;

/// Largest number of points one ledger entry may credit by the earning rules, and so the
/// largest points a reversal can name: 10^12.
pub const MAX_ENTRY_POINTS: i64 = 1_000_000_000_000;

/// Largest points balance a member may reach by its own changes: 10^14 each for its points
/// (available plus pending), its lifetime earned points and its qualifying points, and for a
/// points tier threshold.
pub const MAX_BALANCE_POINTS: i64 = 100_000_000_000_000;

/// Largest qualifying spend a member may reach by its own changes, in minor units: 10^17
/// (a hundred purchases of [`MAX_AMOUNT_MINOR`] inside one qualifying window).
pub const MAX_BALANCE_MINOR: i64 = 100_000_000_000_000_000;

/// Largest stock a reward may hold, and the largest stock change one call makes: 10^9 units.
pub const MAX_STOCK: i64 = 1_000_000_000;

/// Largest combined bonus multiplier in percent (10,000×): MULTIPLY stacking of many
/// overlapping campaigns could otherwise grow without bound; the combination stops here.
pub const MAX_COMBINED_PERCENT: u64 = 1_000_000;

/// The balances after `entry`'s deltas, each added with overflow checks: a sum that does not
/// fit refuses the change (BALANCE_LIMIT) rather than wrap or panic. `window_points` and
/// `window_spend` are the qualifying sums of the rolling window before the entry.
pub fn balances_after(
    before: &Balances,
    deltas: &Deltas,
    window_points: i64,
    window_spend: i64,
) -> Result<Balances, Rejection> {
    let add = |a: i64, b: i64, balance: &'static str, limit: i64| {
        a.checked_add(b)
            .ok_or(Rejection::BalanceLimit { balance, limit })
    };
    Ok(Balances {
        available: add(
            before.available,
            deltas.available,
            "points",
            MAX_BALANCE_POINTS,
        )?,
        pending: add(before.pending, deltas.pending, "points", MAX_BALANCE_POINTS)?,
        qualifying: add(
            window_points,
            deltas.qualifying,
            "qualifying_points",
            MAX_BALANCE_POINTS,
        )?
        .max(0),
        spend_minor: add(
            window_spend,
            deltas.spend_minor,
            "qualifying_spend",
            MAX_BALANCE_MINOR,
        )?
        .max(0),
        lifetime_earned: add(
            before.lifetime_earned,
            deltas.lifetime_earned,
            "lifetime_earned_points",
            MAX_BALANCE_POINTS,
        )?,
        lifetime_redeemed: add(
            before.lifetime_redeemed,
            deltas.lifetime_redeemed,
            "lifetime_redeemed_points",
            MAX_BALANCE_POINTS,
        )?,
        lifetime_expired: add(
            before.lifetime_expired,
            deltas.lifetime_expired,
            "lifetime_expired_points",
            MAX_BALANCE_POINTS,
        )?,
    })
}

/// What one ledger entry changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Available points.
    pub available: i64,
    /// Pending points.
    pub pending: i64,
    /// Qualifying points.
    pub qualifying: i64,
    /// Qualifying spend, minor units.
    pub spend_minor: i64,
    /// Lifetime earned points.
    pub lifetime_earned: i64,
    /// Lifetime redeemed points.
    pub lifetime_redeemed: i64,
    /// Lifetime expired points.
    pub lifetime_expired: i64,
}

/// Refuses an entry a caller asked for (earn, redeem, adjust, reverse) that raises a balance
/// past its limit. Entries the service makes itself (release, expiry, merges, forfeits) are
/// never refused: they only move points already counted, and refusing them would leave a
/// member that no mutation can settle. A balance already past a limit (merges add two members
/// up) can still be spent and read; it only cannot grow.
pub fn check_limits(
    kind: EntryKind,
    before: &Balances,
    deltas: &Deltas,
    after: &Balances,
) -> Result<(), Rejection> {
    let requested = match kind {
        EntryKind::Earn | EntryKind::Redeem | EntryKind::Adjust | EntryKind::Reverse => true,
        EntryKind::Expire
        | EntryKind::Release
        | EntryKind::MergeIn
        | EntryKind::MergeOut
        | EntryKind::Forfeit
        | EntryKind::UnmergeIn
        | EntryKind::UnmergeOut => false,
    };
    if !requested {
        return Ok(());
    }
    // Each sum is of two values `balances_after` already added without overflow, each well
    // inside i64, so i128 is exact here.
    let points = |b: &Balances| i128::from(b.available) + i128::from(b.pending);
    let over = |grows: bool, value: i128, limit: i64| grows && value > i128::from(limit);
    let checks = [
        (
            points(after) > points(before),
            points(after),
            "points",
            MAX_BALANCE_POINTS,
        ),
        (
            deltas.lifetime_earned > 0,
            i128::from(after.lifetime_earned),
            "lifetime_earned_points",
            MAX_BALANCE_POINTS,
        ),
        (
            deltas.qualifying > 0,
            i128::from(after.qualifying),
            "qualifying_points",
            MAX_BALANCE_POINTS,
        ),
        (
            deltas.spend_minor > 0,
            i128::from(after.spend_minor),
            "qualifying_spend",
            MAX_BALANCE_MINOR,
        ),
    ];
    match checks
        .into_iter()
        .find(|(grows, value, _, limit)| over(*grows, *value, *limit))
    {
        Some((_, _, balance, limit)) => Err(Rejection::BalanceLimit { balance, limit }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balances(available: i64, lifetime_earned: i64) -> Balances {
        Balances {
            available,
            lifetime_earned,
            ..Balances::default()
        }
    }

    fn earn(points: i64) -> Deltas {
        Deltas {
            available: points,
            lifetime_earned: points,
            ..Deltas::default()
        }
    }

    fn check(kind: EntryKind, before: Balances, deltas: Deltas) -> Result<Balances, Rejection> {
        let after = balances_after(&before, &deltas, 0, 0)?;
        check_limits(kind, &before, &deltas, &after)?;
        Ok(after)
    }

    #[test]
    fn an_earn_up_to_the_limit_passes_and_past_it_is_refused() {
        let before = balances(MAX_BALANCE_POINTS - 10, MAX_BALANCE_POINTS - 10);
        assert!(check(EntryKind::Earn, before, earn(10)).is_ok());
        assert_eq!(
            check(EntryKind::Earn, before, earn(11)),
            Err(Rejection::BalanceLimit {
                balance: "points",
                limit: MAX_BALANCE_POINTS
            })
        );
    }

    #[test]
    fn lifetime_earned_is_limited_even_when_the_points_were_spent() {
        let before = balances(0, MAX_BALANCE_POINTS);
        assert_eq!(
            check(EntryKind::Earn, before, earn(1)),
            Err(Rejection::BalanceLimit {
                balance: "lifetime_earned_points",
                limit: MAX_BALANCE_POINTS
            })
        );
    }

    #[test]
    fn a_balance_past_the_limit_can_still_be_spent_and_the_service_moves_it() {
        let before = balances(3 * MAX_BALANCE_POINTS, 3 * MAX_BALANCE_POINTS);
        let redeem = Deltas {
            available: -5,
            lifetime_redeemed: 5,
            ..Deltas::default()
        };
        assert!(check(EntryKind::Redeem, before, redeem).is_ok());
        assert!(check(EntryKind::MergeIn, before, earn(MAX_BALANCE_POINTS)).is_ok());
    }

    #[test]
    fn a_sum_past_i64_is_refused_not_wrapped() {
        let before = balances(i64::MAX - 1, 0);
        assert_eq!(
            check(EntryKind::MergeIn, before, earn(2)),
            Err(Rejection::BalanceLimit {
                balance: "points",
                limit: MAX_BALANCE_POINTS
            })
        );
    }
}
