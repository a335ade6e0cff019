//! The Gamma-Gamma model of spend per transaction (Colombo & Jiang 1999, as used by Fader,
//! Hardie & Lee, "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis", JMR 42(4),
//! 2005): each transaction's value is Gamma(p, ν) with the customer's ν ~ Gamma(q, γ), so a
//! customer's mean of x transactions, m̄, has the density their eq. 3 gives, and the expected
//! value of a customer's next transaction shrinks m̄ towards the population mean pγ/(q−1).

use std::collections::BTreeMap;

use super::fit::minimise;
use super::{CustomerSummary, FitReport, MinimumData, PredictError};

/// Gamma-Gamma parameters: transaction value ~ Gamma(shape p, rate ν), ν ~ Gamma(shape q,
/// rate γ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// ln f(m̄ | p, q, γ, x) of one customer with `x` ≥ 1 transactions of mean value `m` > 0:
/// f = Γ(px+q) / (Γ(px) Γ(q)) · γ^q m̄^(px−1) x^(px) / (γ + x m̄)^(px+q).
pub fn log_likelihood(params: &GammaGamma, x: f64, m: f64) -> f64 {
    let GammaGamma { p, q, gamma } = *params;
    let px = p * x;
    let lg = libm::lgamma;
    lg(px + q) - lg(px) - lg(q) + q * gamma.ln() + (px - 1.0) * m.ln() + px * x.ln()
        - (px + q) * (gamma + x * m).ln()
}

/// The repeat customers grouped by x, each with its m̄ and ln m̄: the ln Γ terms of the
/// likelihood depend on the parameters and x alone, and customers share a few dozen values of
/// x, so a fit's step computes them once per x (and ln m̄ once per fit).
struct RepeatGroup {
    x: f64,
    /// (m̄, ln m̄) of each customer with this x.
    means: Vec<(f64, f64)>,
}

fn by_repeat_count(repeat: &[(f64, f64)]) -> Vec<RepeatGroup> {
    let mut groups: BTreeMap<u64, RepeatGroup> = BTreeMap::new();
    for &(x, m) in repeat {
        groups
            .entry(x.to_bits())
            .or_insert_with(|| RepeatGroup {
                x,
                means: Vec::new(),
            })
            .means
            .push((m, m.ln()));
    }
    groups.into_values().collect()
}

/// Σ ln f over the groups: the same sum as [`log_likelihood`] per customer.
fn total_log_likelihood(params: &GammaGamma, groups: &[RepeatGroup]) -> f64 {
    let GammaGamma { p, q, gamma } = *params;
    let lg = libm::lgamma;
    let ln_gamma = gamma.ln();
    groups
        .iter()
        .map(|group| {
            let x = group.x;
            let px = p * x;
            let head = lg(px + q) - lg(px) - lg(q) + q * ln_gamma + px * x.ln();
            group
                .means
                .iter()
                .map(|&(m, ln_m)| head + (px - 1.0) * ln_m - (px + q) * (gamma + x * m).ln())
                .sum::<f64>()
        })
        .sum()
}

/// Fits p, q, γ by maximum likelihood from p = q = γ = 1 on the customers with at least one
/// repeat purchase (x ≥ 1, m = the mean of their repeat days' totals, the definition that
/// reproduces the published CDNOW fit). Both thresholds of `minimum` apply: the spend model is
/// fitted on the same customer base as the purchase model.
pub fn fit_gamma_gamma(
    customers: &[CustomerSummary],
    minimum: &MinimumData,
) -> Result<FitReport<GammaGamma>, PredictError> {
    minimum.check(customers)?;
    let repeat: Vec<(f64, f64)> = customers
        .iter()
        .filter(|s| s.x > 0.0)
        .map(|s| (s.x, s.m))
        .collect();
    let non_positive = repeat.iter().filter(|(_, m)| *m <= 0.0).count();
    if non_positive > 0 {
        return Err(PredictError::NonPositiveSpend {
            count: non_positive,
        });
    }
    let from_logs = |v: &[f64]| GammaGamma {
        p: v[0].exp(),
        q: v[1].exp(),
        gamma: v[2].exp(),
    };
    let by_x = by_repeat_count(&repeat);
    let found = minimise(
        |v| -total_log_likelihood(&from_logs(v), &by_x),
        &[0.0; 3],
        repeat.len(),
    )?;
    let params = from_logs(&found.point);
    if ![params.p, params.q, params.gamma]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
    {
        return Err(PredictError::FitFailed(
            "the spend model's parameters ran off to 0 or infinity".into(),
        ));
    }
    Ok(FitReport {
        params,
        log_likelihood: -found.cost,
        iterations: found.iterations,
        converged: found.converged,
        termination: found.termination,
    })
}

/// E[M | p, q, γ, m̄, x], the expected value of the customer's next transaction (FHL 2005):
/// (q−1)/(px+q−1) · pγ/(q−1) + px/(px+q−1) · m̄, a weighted mean of the population mean
/// pγ/(q−1) and the customer's own m̄. Computed as (pγ + px m̄)/(px+q−1), the same expression
/// with (q−1) cancelled, which needs q > 1 only when x = 0: a customer without repeat purchases
/// gets the population mean pγ/(q−1), undefined unless q > 1.
pub fn conditional_expected_value(
    params: &GammaGamma,
    x: f64,
    m: f64,
) -> Result<f64, PredictError> {
    let GammaGamma { p, q, gamma } = *params;
    if ![p, q, gamma].iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(PredictError::InvalidParameter(
            "the Gamma-Gamma parameters p, q and gamma must be positive numbers",
        ));
    }
    if !(x.is_finite() && x >= 0.0 && m.is_finite()) {
        return Err(PredictError::InvalidParameter(
            "the repeat count must be 0 or more and the mean value a number",
        ));
    }
    if x == 0.0 {
        return if q > 1.0 {
            Ok(p * gamma / (q - 1.0))
        } else {
            Err(PredictError::UndefinedPopulationSpend { q })
        };
    }
    let denominator = p * x + q - 1.0;
    if denominator <= 0.0 {
        return Err(PredictError::UndefinedPopulationSpend { q });
    }
    Ok((p * gamma + p * x * m) / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, expected: f64) -> anyhow::Result<()> {
        let err = ((got - expected) / expected).abs();
        anyhow::ensure!(err < 1e-9, "got {got}, expected {expected} ({err:e})");
        Ok(())
    }

    #[test]
    fn by_hand() -> anyhow::Result<()> {
        // p = q = γ = 1, x = 1: f(m) = Γ(2)/(Γ(1)Γ(1)) · 1 · m⁰ · 1 / (1+m)² = 1/(1+m)², so
        // at m = 1, ln f = −2 ln 2.
        let ones = GammaGamma {
            p: 1.0,
            q: 1.0,
            gamma: 1.0,
        };
        close(log_likelihood(&ones, 1.0, 1.0), -2.0 * 2.0_f64.ln())?;
        // p = 2, q = 3, γ = 4, x = 2, m̄ = 10:
        // (q−1)/(px+q−1) · pγ/(q−1) + px/(px+q−1) · m̄ = 2/6 · 8/2 + 4/6 · 10 = 4/3 + 40/6 = 8.
        let p = GammaGamma {
            p: 2.0,
            q: 3.0,
            gamma: 4.0,
        };
        close(conditional_expected_value(&p, 2.0, 10.0)?, 8.0)?;
        // x = 0: the population mean pγ/(q−1) = 8/2 = 4.
        close(conditional_expected_value(&p, 0.0, 0.0)?, 4.0)?;
        Ok(())
    }

    #[test]
    fn grouping_by_repeat_count_keeps_the_total() {
        let params = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let repeat = [
            (2.0, 30.5),
            (1.0, 12.0),
            (2.0, 8.25),
            (7.0, 41.0),
            (1.0, 99.9),
        ];
        let groups = by_repeat_count(&repeat);
        assert_eq!(groups.len(), 3);
        let plain: f64 = repeat
            .iter()
            .map(|&(x, m)| log_likelihood(&params, x, m))
            .sum();
        let grouped = total_log_likelihood(&params, &groups);
        assert!(
            ((grouped - plain) / plain).abs() < 1e-14,
            "{grouped} vs {plain}"
        );
    }

    #[test]
    fn the_population_mean_needs_q_above_one() {
        let p = GammaGamma {
            p: 2.0,
            q: 0.8,
            gamma: 4.0,
        };
        assert_eq!(
            conditional_expected_value(&p, 0.0, 0.0),
            Err(PredictError::UndefinedPopulationSpend { q: 0.8 })
        );
        // With a repeat purchase the weighted mean is still defined: (8 + 2·3·10)/(6−0.2).
        assert!(conditional_expected_value(&p, 3.0, 10.0).is_ok());
    }

    #[test]
    fn refuses_too_few_repeat_customers_and_non_positive_spend() {
        let one_off = CustomerSummary {
            x: 0.0,
            t_x: 0.0,
            t: 10.0,
            m: 0.0,
        };
        let repeat = CustomerSummary {
            x: 2.0,
            t_x: 3.0,
            t: 10.0,
            m: 12.0,
        };
        let minimum = MinimumData {
            customers: 3,
            repeat_customers: 2,
        };
        let err = fit_gamma_gamma(&[one_off, one_off, repeat], &minimum);
        assert_eq!(
            err,
            Err(PredictError::TooFewRepeatCustomers {
                found: 1,
                needed: 2
            })
        );
        if let Err(e) = err {
            assert_eq!(
                e.to_string(),
                "only 1 customers made a repeat purchase; at least 2 are needed to learn how \
                 often customers come back and what they spend"
            );
        }
        let refund = CustomerSummary { m: -5.0, ..repeat };
        assert_eq!(
            fit_gamma_gamma(&[one_off, refund, repeat], &minimum),
            Err(PredictError::NonPositiveSpend { count: 1 })
        );
    }
}
