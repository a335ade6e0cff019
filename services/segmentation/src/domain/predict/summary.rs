//! A customer's purchases reduced to what the BG/NBD and Gamma-Gamma models read: the number
//! of repeat purchase days, the first-to-last and first-to-now spans in weeks, and the mean
//! value of the repeat days. These definitions are the ones that reproduce the published CDNOW
//! fits (see `tests.rs`), so they are fixed here rather than left to each caller.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use super::PredictError;

/// Weeks are days / 7, as in the published CDNOW analyses.
pub const DAYS_PER_WEEK: f64 = 7.0;

/// One customer as of a time T₀.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerSummary {
    /// Repeat transactions: distinct UTC purchase days after the first, up to T₀'s date.
    pub x: f64,
    /// Weeks from the first to the last purchase day (0 when `x` = 0).
    pub t_x: f64,
    /// Weeks from the first purchase day to T₀'s UTC date.
    pub t: f64,
    /// Mean of the repeat days' totals, the first day excluded; 0 when `x` = 0.
    pub m: f64,
}

impl CustomerSummary {
    /// Why this summary cannot come from any purchase history, if it cannot. The fits refuse
    /// such input instead of returning parameters shaped by it.
    pub(super) fn problem(&self) -> Option<&'static str> {
        let Self { x, t_x, t, m } = *self;
        if !(x.is_finite() && t_x.is_finite() && t.is_finite() && m.is_finite()) {
            return Some("a value is not a finite number");
        }
        if x < 0.0 || x.fract() != 0.0 {
            return Some("the number of repeat purchases must be a whole number, 0 or more");
        }
        if t_x < 0.0 || t < t_x {
            return Some(
                "the last purchase must lie between the first purchase and the as-of time",
            );
        }
        if x == 0.0 && t_x != 0.0 {
            return Some("a customer without repeat purchases has no time to a last purchase");
        }
        None
    }
}

/// The summary of one customer's purchases `(time, amount)` as of `as_of`, or `None` when the
/// customer had not bought yet.
///
/// Day arithmetic, explicitly: every purchase is placed on its UTC calendar day and purchases
/// after `as_of` are dropped; each day with a purchase is one transaction worth the sum of that
/// day's amounts. With d₀ the first day, d_last the last and D the UTC date of `as_of`:
/// x = (number of days) − 1, t_x = (d_last − d₀) in days / 7, T = (D − d₀) in days / 7, and
/// m = the mean of the totals of the days after d₀. So a customer who first bought on
/// 1997-01-01 and is summarised as of 1997-09-30 (any time of that day) has T = 272 / 7 =
/// 38.857 weeks, as in the published CDNOW data.
pub fn summarize(
    purchases: &[(DateTime<Utc>, f64)],
    as_of: DateTime<Utc>,
) -> Result<Option<CustomerSummary>, PredictError> {
    let mut days: BTreeMap<NaiveDate, f64> = BTreeMap::new();
    for &(at, amount) in purchases {
        if !amount.is_finite() {
            return Err(PredictError::InvalidAmount { amount });
        }
        if at <= as_of {
            *days.entry(at.date_naive()).or_insert(0.0) += amount;
        }
    }
    let (Some((&first, _)), Some((&last, _))) = (days.first_key_value(), days.last_key_value())
    else {
        return Ok(None);
    };
    let weeks_since_first = |day: NaiveDate| day_count(first, day) / DAYS_PER_WEEK;
    let repeats: Vec<f64> = days.values().skip(1).copied().collect();
    let x = repeats.len();
    let m = if x == 0 {
        0.0
    } else {
        repeats.iter().sum::<f64>() / count(x)
    };
    Ok(Some(CustomerSummary {
        x: count(x),
        t_x: weeks_since_first(last),
        t: weeks_since_first(as_of.date_naive()),
        m,
    }))
}

/// Whole days from `from` to `to`, as a float for the week arithmetic.
fn day_count(from: NaiveDate, to: NaiveDate) -> f64 {
    // A span of dates fits an f64 exactly (chrono's dates span ±262,000 years).
    (to - from).num_days() as f64
}

/// A count as a float; counts of purchase days are far below 2⁵³.
fn count(n: usize) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> anyhow::Result<DateTime<Utc>> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .ok_or_else(|| anyhow::anyhow!("bad test date"))
    }

    #[test]
    fn days_collapse_the_first_day_is_not_repeated_and_later_purchases_are_ignored()
    -> anyhow::Result<()> {
        // Customer 0001 of CDNOW: 1997-01-01, 01-18, 08-02 and 12-12 (after the calibration).
        // Two lines on 01-18 make one transaction of 29.73.
        let purchases = [
            (at(1997, 1, 1, 10)?, 29.33),
            (at(1997, 1, 18, 9)?, 20.0),
            (at(1997, 1, 18, 21)?, 9.73),
            (at(1997, 8, 2, 0)?, 14.96),
            (at(1997, 12, 12, 0)?, 26.48),
        ];
        let s = summarize(&purchases, at(1997, 9, 30, 23)?)?
            .ok_or_else(|| anyhow::anyhow!("no summary"))?;
        assert_eq!(s.x, 2.0);
        // 1997-01-01 → 08-02 is 213 days; → 09-30 is 272 days.
        assert_eq!(s.t_x, 213.0 / 7.0);
        assert_eq!(s.t, 272.0 / 7.0);
        assert!((s.m - (29.73 + 14.96) / 2.0).abs() < 1e-12);
        assert_eq!(s.problem(), None);
        Ok(())
    }

    #[test]
    fn a_single_day_has_no_repeats_and_no_purchase_yet_has_no_summary() -> anyhow::Result<()> {
        let one = summarize(
            &[(at(2026, 3, 1, 8)?, 5.0), (at(2026, 3, 1, 18)?, 7.0)],
            at(2026, 3, 15, 0)?,
        )?;
        assert_eq!(
            one,
            Some(CustomerSummary {
                x: 0.0,
                t_x: 0.0,
                t: 2.0,
                m: 0.0
            })
        );
        assert_eq!(
            summarize(&[(at(2026, 4, 1, 0)?, 5.0)], at(2026, 3, 15, 0)?)?,
            None
        );
        assert!(matches!(
            summarize(&[(at(2026, 3, 1, 0)?, f64::NAN)], at(2026, 3, 15, 0)?),
            Err(PredictError::InvalidAmount { .. })
        ));
        Ok(())
    }
}
