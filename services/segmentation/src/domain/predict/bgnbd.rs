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
    PerX::new(params, s.x).log_likelihood(params, s)
}

/// The terms of ln L that depend on the parameters and x alone (A₁, A₂ and the first two of
/// A₄): its six ln Γ are most of the work, and a fit's customers share a few dozen values of x,
/// so [`total_log_likelihood`] computes them once per x rather than once per customer.
#[derive(Debug, Clone, Copy)]
struct PerX {
    x: f64,
    /// A₁ + A₂.
    head: f64,
    /// ln a − ln(b+x−1), when x > 0.
    repeat_head: f64,
}

impl PerX {
    fn new(params: &BgNbd, x: f64) -> Self {
        let BgNbd { r, alpha, a, b } = *params;
        let lg = libm::lgamma;
        let a1 = lg(r + x) - lg(r) + r * alpha.ln();
        let a2 = lg(a + b) + lg(b + x) - lg(b) - lg(a + b + x);
        let repeat_head = if x > 0.0 {
            a.ln() - (b + x - 1.0).ln()
        } else {
            0.0
        };
        Self {
            x,
            head: a1 + a2,
            repeat_head,
        }
    }

    /// ln L of a customer with this x.
    fn log_likelihood(&self, params: &BgNbd, s: &CustomerSummary) -> f64 {
        let alpha = params.alpha;
        self.log_likelihood_at(params.r, (alpha + s.t).ln(), (alpha + s.t_x).ln())
    }

    /// ln L of a customer with this x, given ln(α+T) and ln(α+t_x).
    fn log_likelihood_at(&self, r: f64, ln_alpha_t: f64, ln_alpha_t_x: f64) -> f64 {
        let x = self.x;
        let a3 = -(r + x) * ln_alpha_t;
        let tail = if x > 0.0 {
            let a4 = self.repeat_head - (r + x) * ln_alpha_t_x;
            log_add_exp(a3, a4)
        } else {
            a3
        };
        self.head + tail
    }
}

/// What a fit evaluates at every step. Customers with the same (x, t_x, T) are one summary
/// with a count: the likelihood depends on nothing else, and with whole days many customers
/// share one (every one-off buyer acquired on the same day does; CDNOW: 2,357 customers, 1,016
/// distinct summaries). The summaries are ordered by x (the bits of a non-negative float order
/// as the float does), and each names its T and t_x by their index among the distinct times,
/// which are a few thousand at most (whole days over the retained history): a step takes the
/// ln Γ terms once per x and ln(α+T), ln(α+t_x) once per time, so what remains per summary is
/// the log-sum-exp (a million customers: the six ln Γ per customer were half of a fit).
struct FitData {
    summaries: Vec<Distinct>,
    times: Vec<f64>,
}

struct Distinct {
    x: f64,
    count: f64,
    t: usize,
    t_x: usize,
}

impl FitData {
    fn new(customers: &[CustomerSummary]) -> Self {
        let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
        let mut times: BTreeMap<u64, usize> = BTreeMap::new();
        for s in customers {
            *counts
                .entry((s.x.to_bits(), s.t_x.to_bits(), s.t.to_bits()))
                .or_insert(0.0) += 1.0;
            for time in [s.t, s.t_x] {
                let next = times.len();
                times.entry(time.to_bits()).or_insert(next);
            }
        }
        let summaries = counts
            .into_iter()
            .map(|((x, t_x, t), count)| Distinct {
                x: f64::from_bits(x),
                count,
                t: times[&t],
                t_x: times[&t_x],
            })
            .collect();
        let mut by_index = vec![0.0; times.len()];
        for (bits, index) in times {
            by_index[index] = f64::from_bits(bits);
        }
        Self {
            summaries,
            times: by_index,
        }
    }
}

/// The summed log-likelihood of the customers in `data`.
fn total_log_likelihood(params: &BgNbd, data: &FitData) -> f64 {
    let ln_alpha_times: Vec<f64> = data.times.iter().map(|t| (params.alpha + t).ln()).collect();
    let mut per_x: Option<PerX> = None;
    data.summaries
        .iter()
        .map(|d| {
            let terms = match per_x {
                Some(terms) if terms.x == d.x => terms,
                _ => *per_x.insert(PerX::new(params, d.x)),
            };
            d.count * terms.log_likelihood_at(params.r, ln_alpha_times[d.t], ln_alpha_times[d.t_x])
        })
        .sum()
}

/// Fits r, α, a, b by maximum likelihood from r = α = a = b = 1, refusing data too thin to fit.
pub fn fit_bgnbd(
    customers: &[CustomerSummary],
    minimum: &MinimumData,
) -> Result<FitReport<BgNbd>, PredictError> {
    minimum.check(customers)?;
    let from_logs = |p: &[f64]| BgNbd {
        r: p[0].exp(),
        alpha: p[1].exp(),
        a: p[2].exp(),
        b: p[3].exp(),
    };
    let data = FitData::new(customers);
    let found = minimise(
        |p| -total_log_likelihood(&from_logs(p), &data),
        &[0.0; 4],
        customers.len(),
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
