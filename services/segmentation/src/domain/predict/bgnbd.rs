//! The BG/NBD model of repeat purchasing (Fader, Hardie & Lee, "Counting Your Customers the
//! Easy Way", Marketing Science 24(2), 2005): while active a customer buys at a Poisson rate
//! λ ~ Gamma(r, α); after each purchase they drop out with probability p ~ Beta(a, b).
//! Likelihood (their eq. 6), P(alive) (Fader & Hardie's note "Computing P(alive) using the
//! BG/NBD model") and expected purchases (eq. 7 unconditional, eq. 10 conditional).
//!
//! Numerical care: everything is in logs (ln Γ from `libm::lgamma`, never Γ or a Beta
//! function itself); the two-term likelihood is combined by log-sum-exp and the
//! ((α+T)/(α+t_x))^(r+x) of P(alive) stays a logarithm until the final logistic; the
//! hypergeometric term of eq. 10 is rewritten (Euler's transformation, then the (a−1) factor
//! taken out of the series) so that it neither grows with x nor divides 0 by 0 at a = 1.

use std::collections::BTreeMap;

use super::fit::minimise;
use super::hypergeometric::series;
use super::{CustomerSummary, FitReport, MinimumData, PredictError, log_add_exp};

/// BG/NBD parameters: purchase rate λ ~ Gamma(shape r, rate α) per week, dropout probability
/// p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    fn check(&self) -> Result<(), PredictError> {
        let Self { r, alpha, a, b } = *self;
        if [r, alpha, a, b].iter().all(|v| v.is_finite() && *v > 0.0) {
            Ok(())
        } else {
            Err(PredictError::InvalidParameter(
                "the BG/NBD parameters r, alpha, a and b must be positive numbers",
            ))
        }
    }
}

/// ln L(r, α, a, b | x, t_x, T) of one customer (eq. 6 of the paper):
///
/// ```text
/// L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
///   + [x > 0] · B(a+1, b+x−1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x))
/// ```
///
/// written as A₁ + A₂ + ln(e^A₃ + [x > 0] e^A₄) (log-sum-exp) with
///
/// ```text
/// A₁ = ln Γ(r+x) − ln Γ(r) + r ln α
/// A₂ = ln Γ(a+b) + ln Γ(b+x) − ln Γ(b) − ln Γ(a+b+x)
/// A₃ = −(r+x) ln(α+T)
/// A₄ = ln a − ln(b+x−1) − (r+x) ln(α+t_x)      (B(a+1, b+x−1) / B(a, b+x) = a / (b+x−1))
/// ```
pub fn log_likelihood(params: &BgNbd, s: &CustomerSummary) -> f64 {
    let BgNbd { r, alpha, a, b } = *params;
    let x = s.x;
    let lg = libm::lgamma;
    let a1 = lg(r + x) - lg(r) + r * alpha.ln();
    let a2 = lg(a + b) + lg(b + x) - lg(b) - lg(a + b + x);
    let a3 = -(r + x) * (alpha + s.t).ln();
    let tail = if x > 0.0 {
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.t_x).ln();
        log_add_exp(a3, a4)
    } else {
        a3
    };
    a1 + a2 + tail
}

/// Customers with the same (x, t_x, T), each with how many there are: the likelihood depends
/// on nothing else, and with whole days many customers share one (every one-off buyer
/// acquired on the same day does), so each optimiser step evaluates every distinct summary
/// once (CDNOW: 2,357 customers, 1,016 distinct summaries).
fn distinct_summaries(customers: &[CustomerSummary]) -> Vec<(CustomerSummary, f64)> {
    let mut counts: BTreeMap<(u64, u64, u64), (CustomerSummary, f64)> = BTreeMap::new();
    for s in customers {
        let key = (s.x.to_bits(), s.t_x.to_bits(), s.t.to_bits());
        counts.entry(key).or_insert((*s, 0.0)).1 += 1.0;
    }
    counts.into_values().collect()
}

/// The summed log-likelihood of `customers`, given as distinct summaries with their counts.
fn total_log_likelihood(params: &BgNbd, customers: &[(CustomerSummary, f64)]) -> f64 {
    customers
        .iter()
        .map(|(s, n)| n * log_likelihood(params, s))
        .sum()
}

/// Fits r, α, a, b by maximum likelihood from r = α = a = b = 1, refusing data too thin to fit.
pub fn fit_bgnbd(
    customers: &[CustomerSummary],
    minimum: &MinimumData,
) -> Result<FitReport<BgNbd>, PredictError> {
    if let Some((index, reason)) = customers
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.problem().map(|p| (i, p)))
    {
        return Err(PredictError::InvalidSummary { index, reason });
    }
    if customers.len() < minimum.customers {
        return Err(PredictError::TooFewCustomers {
            found: customers.len(),
            needed: minimum.customers,
        });
    }
    let repeat = customers.iter().filter(|s| s.x > 0.0).count();
    if repeat < minimum.repeat_customers {
        return Err(PredictError::TooFewRepeatCustomers {
            found: repeat,
            needed: minimum.repeat_customers,
        });
    }
    let from_logs = |p: &[f64]| BgNbd {
        r: p[0].exp(),
        alpha: p[1].exp(),
        a: p[2].exp(),
        b: p[3].exp(),
    };
    let distinct = distinct_summaries(customers);
    let found = minimise(
        |p| -total_log_likelihood(&from_logs(p), &distinct),
        &[0.0; 4],
    )?;
    let params = from_logs(&found.point);
    params.check().map_err(|_| {
        PredictError::FitFailed("the purchase model's parameters ran off to 0 or infinity".into())
    })?;
    Ok(FitReport {
        params,
        log_likelihood: -found.cost,
        iterations: found.iterations,
        converged: found.converged,
        termination: found.termination,
    })
}

/// P(alive | x, t_x, T) = 1 / (1 + [x > 0] · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)). A customer
/// with no repeat purchase is alive with certainty: in the BG/NBD dropout happens only right
/// after a purchase.
pub fn p_alive(params: &BgNbd, s: &CustomerSummary) -> f64 {
    let BgNbd { r, alpha, a, b } = *params;
    if s.x <= 0.0 {
        return 1.0;
    }
    let ln_odds_dead =
        a.ln() - (b + s.x - 1.0).ln() + (r + s.x) * ((alpha + s.t).ln() - (alpha + s.t_x).ln());
    logistic(-ln_odds_dead)
}

/// 1 / (1 + e^(−v)), without overflow for large |v|.
fn logistic(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// E[Y(t) | x, t_x, T]: expected purchases in the next `t_weeks` (eq. 10 of the paper):
/// (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)] · P(alive),
/// z = t/(α+T+t).
///
/// Computed as follows. With c = a+b+x−1 and 1−z = (α+T)/(α+T+t), Euler's transformation
/// ₂F₁(A, B; c; z) = (1−z)^(c−A−B) ₂F₁(c−A, c−B; c; z) turns the bracket's product into
/// G = (1−z)^(a−1) ₂F₁(a+b−1−r, a−1; c; z), whose series no longer has terms growing with x
/// (the original's terms reach (1−z)^(−x) before the prefactor cancels them). The second
/// parameter a−1 is a factor of every term after the first: ₂F₁ = 1 + (a−1) H with
/// H = Σ_{n≥1} (a+b−1−r)_n (a)_{n−1} / ((c)_n n!) zⁿ, so
/// [1 − G]/(a−1) = φ − (1−z)^(a−1) H, φ = (1 − (1−z)^(a−1))/(a−1) = −expm1((a−1) ln(1−z))/(a−1),
/// which is finite and accurate at and near a = 1 (φ → −ln(1−z)).
pub fn expected_purchases(
    params: &BgNbd,
    s: &CustomerSummary,
    t_weeks: f64,
) -> Result<f64, PredictError> {
    params.check()?;
    if !(t_weeks.is_finite() && t_weeks >= 0.0) {
        return Err(PredictError::InvalidParameter(
            "the prediction horizon must be 0 or more weeks",
        ));
    }
    if t_weeks == 0.0 {
        return Ok(0.0);
    }
    let BgNbd { r, alpha, a, b } = *params;
    let x = s.x;
    let c = a + b + x - 1.0;
    let z = t_weeks / (alpha + s.t + t_weeks);
    // ln(1−z) = −ln(1 + t/(α+T)), accurate for short horizons too.
    let ln_1mz = -(t_weeks / (alpha + s.t)).ln_1p();
    let u = (a - 1.0) * ln_1mz;
    let phi = if u.abs() < 1e-8 {
        // −expm1(u)/(a−1) = −ln(1−z) (1 + u/2 + u²/6 + …).
        -ln_1mz * (1.0 + u / 2.0)
    } else {
        -u.exp_m1() / (a - 1.0)
    };
    let big_a = a + b - 1.0 - r;
    if z < 0.5 && z * (a - 1.0) > PFAFF_ABOVE {
        // A dropout distribution collapsed to one value (a and b in the millions, as small
        // bases can fit): G's series terms grow for about z·a terms before they shrink, past
        // any term cap. Pfaff's transformation ₂F₁(A, B; c; z) = (1−z)^(−B) ₂F₁(c−A, B; c;
        // z/(z−1)) cancels G's prefactor exactly, G = ₂F₁(x+r, a−1; c; z/(z−1)), whose terms
        // shrink at once (B/c ≈ a/(a+b) < 1, |z/(z−1)| < 1 for z < ½). Far from a = 1 the
        // bracket [1 − G]/(a−1) has no cancellation to fear.
        let g = series(c - big_a, a - 1.0, c, z / (z - 1.0), 0, 1.0)?.value();
        return Ok(c * (1.0 - g) / (a - 1.0) * p_alive(params, s));
    }
    let h = series(big_a, a - 1.0, c, z, 1, big_a * z / c)?;
    let h_scaled = h.sign * (h.ln_abs + u).exp();
    Ok(c * (phi - h_scaled) * p_alive(params, s))
}

/// Above this z·(a−1), [`expected_purchases`] sums G through Pfaff's transformation: the
/// direct series' terms would grow for that many terms first.
const PFAFF_ABOVE: f64 = 1_000.0;

/// E[X(t)]: expected purchases of a customer in their first `t_weeks` after acquisition
/// (eq. 7 of the paper), the population check of a fit. It is eq. 10 at x = t_x = T = 0.
pub fn unconditional_expected_purchases(params: &BgNbd, t_weeks: f64) -> Result<f64, PredictError> {
    let newcomer = CustomerSummary {
        x: 0.0,
        t_x: 0.0,
        t: 0.0,
        m: 0.0,
    };
    expected_purchases(params, &newcomer, t_weeks)
}

#[cfg(test)]
mod tests;
