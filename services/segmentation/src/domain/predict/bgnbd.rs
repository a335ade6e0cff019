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
    let h = series(big_a, a - 1.0, c, z, 1, big_a * z / c)?;
    let h_scaled = h.sign * (h.ln_abs + u).exp();
    Ok(c * (phi - h_scaled) * p_alive(params, s))
}

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
mod tests {
    use super::super::hyp2f1;
    use super::*;

    fn summary(x: f64, t_x: f64, t: f64) -> CustomerSummary {
        CustomerSummary { x, t_x, t, m: 0.0 }
    }

    fn close(got: f64, expected: f64) -> anyhow::Result<()> {
        let err = ((got - expected) / expected).abs();
        anyhow::ensure!(err < 1e-9, "got {got}, expected {expected} ({err:e})");
        Ok(())
    }

    #[test]
    fn likelihood_by_hand() -> anyhow::Result<()> {
        // x = 0: both Beta ratios are 1 and Γ(r)/Γ(r) = 1, so L = (α/(α+T))^r.
        // r = 2, α = 3, T = 5: ln L = 2 ln(3/8).
        let p = BgNbd {
            r: 2.0,
            alpha: 3.0,
            a: 0.7,
            b: 2.2,
        };
        close(
            log_likelihood(&p, &summary(0.0, 0.0, 5.0)),
            2.0 * (3.0_f64 / 8.0).ln(),
        )?;
        // r = α = a = b = 1, x = 1, t_x = 1, T = 3:
        // first term  B(1,2)/B(1,1) · Γ(2)·1/(Γ(1)·4²) = ½ · 1/16 = 1/32;
        // second term B(2,1)/B(1,1) · Γ(2)·1/(Γ(1)·2²) = ½ · ¼   = 1/8;
        // L = 1/32 + 4/32 = 5/32.
        let ones = BgNbd {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        close(
            log_likelihood(&ones, &summary(1.0, 1.0, 3.0)),
            (5.0_f64 / 32.0).ln(),
        )?;
        // Far-out data stay finite: 500 purchases, the last long ago.
        assert!(log_likelihood(&ones, &summary(500.0, 1.0, 5000.0)).is_finite());
        Ok(())
    }

    #[test]
    fn grouping_identical_summaries_keeps_the_total() {
        let p = BgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let customers = [
            summary(0.0, 0.0, 30.0),
            summary(2.0, 10.0, 30.0),
            summary(0.0, 0.0, 30.0),
            summary(2.0, 10.0, 31.0),
            summary(0.0, 0.0, 30.0),
        ];
        let distinct = distinct_summaries(&customers);
        assert_eq!(distinct.len(), 3);
        let plain: f64 = customers.iter().map(|s| log_likelihood(&p, s)).sum();
        let grouped = total_log_likelihood(&p, &distinct);
        assert!(((grouped - plain) / plain).abs() < 1e-14);
    }

    #[test]
    fn p_alive_by_hand() -> anyhow::Result<()> {
        let p = BgNbd {
            r: 2.0,
            alpha: 3.0,
            a: 1.0,
            b: 3.0,
        };
        // No repeat purchase: alive for certain, however long ago.
        assert_eq!(p_alive(&p, &summary(0.0, 0.0, 500.0)), 1.0);
        // x = 2, t_x = 1, T = 5: a/(b+x−1) = 1/4, ((α+T)/(α+t_x))^(r+x) = (8/4)⁴ = 16,
        // P = 1/(1 + 16/4) = 0.2.
        close(p_alive(&p, &summary(2.0, 1.0, 5.0)), 0.2)?;
        // Recent: the same buyer whose last purchase is today, t_x = T = 5: ratio 1,
        // P = 1/(1 + 1/4) = 0.8.
        close(p_alive(&p, &summary(2.0, 5.0, 5.0)), 0.8)?;
        // Long-silent frequent buyer: r = 1, α = 2, a = 1, b = 3; x = 9, t_x = 2, T = 6:
        // a/(b+x−1) = 1/11, ((2+6)/(2+2))^(1+9) = 2¹⁰ = 1024, P = 1/(1 + 1024/11) = 11/1035.
        let q = BgNbd {
            r: 1.0,
            alpha: 2.0,
            a: 1.0,
            b: 3.0,
        };
        close(p_alive(&q, &summary(9.0, 2.0, 6.0)), 11.0 / 1035.0)?;
        // Extreme silence underflows to 0 rather than NaN.
        assert_eq!(p_alive(&q, &summary(900.0, 2.0, 6000.0)), 0.0);
        Ok(())
    }

    #[test]
    fn expected_purchases_by_hand() -> anyhow::Result<()> {
        // r = a+b−1 makes the transformed series' first parameter 0, so G = (1−z)^(a−1).
        // r = 2, α = 3, a = 2, b = 1; x = 2, t_x = 1, T = 5, t = 8: z = 8/(3+5+8) = ½,
        // c = a+b+x−1 = 4, E = c/(a−1) · (1 − (1−z)^(a−1)) · P(alive) = 4 · ½ · P(alive),
        // P(alive) = 1/(1 + a/(b+x−1) · (8/4)^(r+x)) = 1/(1 + 2/2 · 16) = 1/17; E = 2/17.
        let p = BgNbd {
            r: 2.0,
            alpha: 3.0,
            a: 2.0,
            b: 1.0,
        };
        close(
            expected_purchases(&p, &summary(2.0, 1.0, 5.0), 8.0)?,
            2.0 / 17.0,
        )?;
        // a = 1, where the paper's formula is 0/0; r = 1, b = 2, x = 0, c = 2, first series
        // parameter b−r = 1: H = Σ (1)_n (1)_{n−1}/((2)_n n!) zⁿ = Σ zⁿ/(n(n+1))
        //   = −ln(1−z) + ln(1−z)/z + 1,
        // and E = c (φ − H) with φ = −ln(1−z): E = 2 (−ln(1−z)/z − 1).
        // With α = 1, T = 3, t = 4: z = ½, E = 2 (2 ln 2 − 1).
        let at_one = BgNbd {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 2.0,
        };
        let e = expected_purchases(&at_one, &summary(0.0, 0.0, 3.0), 4.0)?;
        close(e, 2.0 * (2.0 * 2.0_f64.ln() - 1.0))?;
        // Continuous through a = 1.
        for a in [1.0 - 1e-7, 1.0 + 1e-7] {
            let near = BgNbd { a, ..at_one };
            let e_near = expected_purchases(&near, &summary(0.0, 0.0, 3.0), 4.0)?;
            assert!((e_near - e).abs() < 1e-6, "{e_near} vs {e}");
        }
        Ok(())
    }

    #[test]
    fn expected_purchases_agree_with_the_papers_form() -> anyhow::Result<()> {
        // Eq. 10 as printed, with the plain series, on parameters where it is well behaved.
        let p = BgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        for (x, t_x, t) in [(0.0, 0.0, 38.86), (2.0, 30.43, 38.86), (7.0, 10.0, 35.0)] {
            for horizon in [0.5, 4.0, 39.0, 150.0] {
                let s = summary(x, t_x, t);
                let z = horizon / (p.alpha + t + horizon);
                let c = p.a + p.b + x - 1.0;
                let paper = c / (p.a - 1.0)
                    * (1.0
                        - ((p.alpha + t) / (p.alpha + t + horizon)).powf(p.r + x)
                            * hyp2f1(p.r + x, p.b + x, c, z)?)
                    * p_alive(&p, &s);
                let ours = expected_purchases(&p, &s, horizon)?;
                anyhow::ensure!(
                    ((ours - paper) / paper).abs() < 1e-9,
                    "x={x} t={horizon}: {ours} vs {paper}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn unconditional_expectation_starts_at_the_mean_rate() -> anyhow::Result<()> {
        // For a short horizon nobody has dropped out yet: E[X(t)] ≈ (r/α) t.
        let p = BgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let t = 1e-4;
        let e = unconditional_expected_purchases(&p, t)?;
        assert!(((e - p.r / p.alpha * t) / e).abs() < 1e-3, "{e}");
        assert_eq!(unconditional_expected_purchases(&p, 0.0)?, 0.0);
        Ok(())
    }
}
