//! Checks of the BG/NBD formulas against values worked out by hand, against the paper's own
//! printed form of eq. 10, and at the edges (a = 1, extreme silence).

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
        summary(1.0, 4.0, 29.0),
        summary(2.0, 12.0, 30.0),
    ];
    let data = FitData::new(&customers);
    assert_eq!(data.summaries.len(), 5);
    assert_eq!(data.times.len(), 7);
    let plain: f64 = customers.iter().map(|s| log_likelihood(&p, s)).sum();
    let grouped = total_log_likelihood(&p, &data);
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
fn a_collapsed_dropout_distribution_still_predicts_and_agrees_with_the_papers_form()
-> anyhow::Result<()> {
    // a and b in the thousands (a small base can fit millions): z·(a−1) is past the Pfaff
    // threshold, so `expected_purchases` sums G through Pfaff's transformation, while the
    // printed form's ₂F₁(r+x, b+x; c; z) is still within the plain series' term cap.
    let p = BgNbd {
        r: 0.31,
        alpha: 1.7,
        a: 8_000.0,
        b: 42_000.0,
    };
    for (x, t_x, t) in [(0.0, 0.0, 20.0), (3.0, 15.0, 20.0), (9.0, 10.0, 51.0)] {
        let s = summary(x, t_x, t);
        let horizon = 90.0 / 7.0;
        let z = horizon / (p.alpha + t + horizon);
        assert!(
            z < 0.5 && z * (p.a - 1.0) > PFAFF_ABOVE,
            "not the Pfaff case"
        );
        let c = p.a + p.b + x - 1.0;
        let paper = c / (p.a - 1.0)
            * (1.0
                - ((p.alpha + t) / (p.alpha + t + horizon)).powf(p.r + x)
                    * hyp2f1(p.r + x, p.b + x, c, z)?)
            * p_alive(&p, &s);
        let ours = expected_purchases(&p, &s, horizon)?;
        anyhow::ensure!(
            ((ours - paper) / paper).abs() < 1e-9,
            "x={x}: {ours} vs {paper}"
        );
    }
    // And with a, b in the millions, where the plain series gives up.
    let collapsed = BgNbd {
        r: 0.31,
        alpha: 1.7,
        a: 1_228_790.0,
        b: 6_330_000.0,
    };
    let value = expected_purchases(&collapsed, &summary(3.0, 15.0, 20.0), 90.0 / 7.0)?;
    anyhow::ensure!(value.is_finite() && value > 0.0, "{value}");
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
