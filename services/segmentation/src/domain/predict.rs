//! Predicted customer value and churn (issue 19): the pure math behind it, with no storage or
//! transport. A customer's purchases become a [`CustomerSummary`] (repeat purchase days `x`,
//! recency `t_x`, age `T`, mean repeat value `m`); the BG/NBD model (Fader, Hardie & Lee,
//! "Counting Your Customers the Easy Way", Marketing Science 2005) predicts how many purchases
//! follow and whether the customer is still active; the Gamma-Gamma model (Fader, Hardie & Lee,
//! "RFM and CLV: Using Iso-Value Curves", JMR 2005, after Colombo & Jiang 1999) predicts the
//! value of each; [`clv`] combines them into a discounted customer lifetime value.
//!
//! # Layout
//! - `summary`: purchases → [`CustomerSummary`], the day arithmetic in one place.
//! - `bgnbd`: the purchase and dropout model: likelihood, fit, P(alive), expected purchases.
//! - `gamma_gamma`: the spend model: likelihood, fit, expected transaction value.
//! - `hypergeometric`: the Gauss series ₂F₁ the expected purchases need.
//! - `fit`: maximum likelihood by Nelder–Mead (argmin) over log-parameters.
//! - `tests`: the CDNOW reproduction of the published parameters and holdout.

mod bgnbd;
mod fit;
mod gamma_gamma;
mod hypergeometric;
mod summary;
#[cfg(test)]
mod tests;

pub use bgnbd::{
    BgNbd, expected_purchases, fit_bgnbd, log_likelihood as bgnbd_log_likelihood, p_alive,
    unconditional_expected_purchases,
};
pub use gamma_gamma::{
    GammaGamma, conditional_expected_value, fit_gamma_gamma,
    log_likelihood as gamma_gamma_log_likelihood,
};
pub use hypergeometric::hyp2f1;
pub use summary::{CustomerSummary, DAYS_PER_WEEK, summarize};

/// Days in one month of [`clv`]'s horizon (the convention of the CLV literature's examples).
pub const DAYS_PER_MONTH: f64 = 30.0;

/// Why a fit or a prediction was refused. The messages are meant for the marketer who asked:
/// they say what is missing and what would fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error(
        "only {found} customers have made a purchase; at least {needed} are needed to learn \
         how often customers buy"
    )]
    TooFewCustomers { found: usize, needed: usize },
    #[error(
        "only {found} customers made a repeat purchase; at least {needed} are needed to learn \
         how often customers come back and what they spend"
    )]
    TooFewRepeatCustomers { found: usize, needed: usize },
    #[error("customer summary {index} cannot be used: {reason}")]
    InvalidSummary { index: usize, reason: &'static str },
    #[error("a purchase amount is not a number ({amount}); fix the amounts before predicting")]
    InvalidAmount { amount: f64 },
    #[error(
        "{count} customers with repeat purchases spent zero or less on average (refunds?); the \
         spend model needs a positive average spend for every repeat customer"
    )]
    NonPositiveSpend { count: usize },
    #[error(
        "the spend model's q = {q} is not above 1, so the expected spend of a customer without \
         repeat purchases is undefined"
    )]
    UndefinedPopulationSpend { q: f64 },
    #[error("invalid model parameter: {0}")]
    InvalidParameter(&'static str),
    #[error("the model could not be fitted: {0}")]
    FitFailed(String),
    #[error(
        "the hypergeometric series ₂F₁({a}, {b}; {c}; {z}) {reason}; the prediction horizon may \
         be too long for these parameters"
    )]
    Series {
        a: f64,
        b: f64,
        c: f64,
        z: f64,
        reason: &'static str,
    },
}

/// The least data a fit accepts. Fewer customers give parameters that mostly reflect noise,
/// so the caller (the job that fits) refuses rather than publish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinimumData {
    /// Customers with at least one purchase by the as-of time.
    pub customers: usize,
    /// Of those, customers with at least one repeat purchase day.
    pub repeat_customers: usize,
}

impl MinimumData {
    /// Refuses what neither model can be fitted to: a summary that is not one (its index and
    /// why), fewer customers or fewer repeat customers than these thresholds.
    fn check(&self, customers: &[CustomerSummary]) -> Result<(), PredictError> {
        if let Some((index, reason)) = customers
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.problem().map(|p| (i, p)))
        {
            return Err(PredictError::InvalidSummary { index, reason });
        }
        if customers.len() < self.customers {
            return Err(PredictError::TooFewCustomers {
                found: customers.len(),
                needed: self.customers,
            });
        }
        let repeat = customers.iter().filter(|s| s.x > 0.0).count();
        if repeat < self.repeat_customers {
            return Err(PredictError::TooFewRepeatCustomers {
                found: repeat,
                needed: self.repeat_customers,
            });
        }
        Ok(())
    }
}

/// The outcome of a maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport<P> {
    pub params: P,
    /// The summed log-likelihood at `params` (higher is better; CDNOW's BG/NBD is −9582.4).
    pub log_likelihood: f64,
    /// Nelder–Mead iterations over all restarts.
    pub iterations: u64,
    /// The simplex collapsed (cost spread below tolerance) and a restart from the optimum
    /// found no better point. `false` means the iteration cap was reached first.
    pub converged: bool,
    /// argmin's termination reason of the last run, in words.
    pub termination: String,
}

/// Customer lifetime value over the next `months` months (30 days each), discounted monthly:
/// Σ_{m=1..H} (E[Y(30m days)] − E[Y(30(m−1) days)]) · E[M] / (1 + d)^m, where E[Y(t)] is the
/// BG/NBD conditional expected number of purchases in the next `t` (weeks = days / 7) and E[M]
/// the Gamma-Gamma expected value of one transaction (the population mean for x = 0).
pub fn clv(
    bgnbd: &BgNbd,
    gg: &GammaGamma,
    summary: &CustomerSummary,
    months: u32,
    monthly_discount: f64,
) -> Result<f64, PredictError> {
    if !(monthly_discount.is_finite() && monthly_discount > -1.0) {
        return Err(PredictError::InvalidParameter(
            "the monthly discount rate must be a number above -1",
        ));
    }
    let value = conditional_expected_value(gg, summary.x, summary.m)?;
    let mut total = 0.0;
    let mut before = 0.0;
    for month in 1..=months {
        let weeks = f64::from(month) * DAYS_PER_MONTH / DAYS_PER_WEEK;
        let upto = expected_purchases(bgnbd, summary, weeks)?;
        total += (upto - before) * value / (1.0 + monthly_discount).powi(month_exponent(month));
        before = upto;
    }
    Ok(total)
}

/// `month` as the exponent `powi` takes; a horizon past i32::MAX months (178 million years)
/// saturates, where the discount factor is 0 or ∞ anyway.
fn month_exponent(month: u32) -> i32 {
    i32::try_from(month).unwrap_or(i32::MAX)
}

/// ln(e^a + e^b) without overflow: the larger term is factored out.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    hi + (lo - hi).exp().ln_1p()
}
