//! The CDNOW reproduction: the published BG/NBD and Gamma-Gamma fits of Fader, Hardie & Lee
//! (2005) on the CDNOW sample in `tests/data/cdnow`, the 39-week holdout, and the CLV built on
//! them. The data file must be there: a missing file fails these tests rather than skipping
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use super::*;

/// One customer's purchases: (time, dollar value).
type Purchases = Vec<(DateTime<Utc>, f64)>;

/// The 1/10th CDNOW sample's lines grouped by customer.
fn cdnow() -> anyhow::Result<BTreeMap<String, Purchases>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/cdnow/CDNOW_sample.txt"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {path}"))?;
    let mut customers: BTreeMap<String, Purchases> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, id, date, _cds, dollars] = fields[..] else {
            anyhow::bail!("unexpected CDNOW line {line:?}");
        };
        let day = NaiveDate::parse_from_str(date, "%Y%m%d")
            .with_context(|| format!("Failed to parse the date of {line:?}"))?;
        let at = day
            .and_hms_opt(0, 0, 0)
            .context("Failed to build midnight")?
            .and_utc();
        customers
            .entry(id.to_owned())
            .or_default()
            .push((at, dollars.parse()?));
    }
    Ok(customers)
}

fn end_of(y: i32, m: u32, d: u32) -> anyhow::Result<DateTime<Utc>> {
    Ok(NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|day| day.and_hms_opt(23, 59, 59))
        .context("Failed to build a date")?
        .and_utc())
}

/// The 39-week calibration summaries (as of 1997-09-30, end of day) and each customer's
/// purchase days in the 39-week holdout 1997-10-01 … 1998-06-30.
fn calibration_and_holdout() -> anyhow::Result<(Vec<CustomerSummary>, Vec<f64>)> {
    let calibration_end = end_of(1997, 9, 30)?;
    let holdout_end = end_of(1998, 6, 30)?;
    let mut summaries = Vec::new();
    let mut holdout = Vec::new();
    for purchases in cdnow()?.values() {
        let Some(summary) = summarize(purchases, calibration_end)? else {
            continue;
        };
        let days: BTreeSet<NaiveDate> = purchases
            .iter()
            .filter(|(at, _)| *at > calibration_end && *at <= holdout_end)
            .map(|(at, _)| at.date_naive())
            .collect();
        summaries.push(summary);
        holdout.push(days.len() as f64);
    }
    Ok((summaries, holdout))
}

fn within(got: f64, published: f64, tolerance: f64) -> bool {
    ((got - published) / published).abs() <= tolerance
}

const MINIMUM: MinimumData = MinimumData {
    customers: 500,
    repeat_customers: 50,
};

#[test]
fn cdnow_reproduces_the_published_fits_and_the_holdout() -> anyhow::Result<()> {
    let (summaries, holdout) = calibration_and_holdout()?;
    let repeat = summaries.iter().filter(|s| s.x > 0.0).count();
    assert_eq!((summaries.len(), repeat), (2357, 946));

    let started = Instant::now();
    let purchases = fit_bgnbd(&summaries, &MINIMUM)?;
    let bgnbd_time = started.elapsed();
    let p = purchases.params;
    eprintln!("BG/NBD {purchases:?} in {bgnbd_time:?}");
    assert!(purchases.converged, "{purchases:?}");
    for (got, published) in [(p.r, 0.243), (p.alpha, 4.414), (p.a, 0.793), (p.b, 2.426)] {
        assert!(within(got, published, 0.01), "{p:?}");
    }
    assert!(
        (purchases.log_likelihood - -9582.4).abs() < 0.1,
        "{purchases:?}"
    );

    let started = Instant::now();
    let spend = fit_gamma_gamma(&summaries, &MINIMUM)?;
    let gg_time = started.elapsed();
    let g = spend.params;
    eprintln!("Gamma-Gamma {spend:?} in {gg_time:?}");
    assert!(spend.converged, "{spend:?}");
    for (got, published) in [(g.p, 6.25), (g.q, 3.74), (g.gamma, 15.44)] {
        assert!(within(got, published, 0.01), "{g:?}");
    }

    // The holdout: purchases expected in the 39 weeks after calibration against the purchase
    // days that happened. With the published parameters this is 1,654 expected against 1,882
    // actual, 12.1 % low: BG/NBD on CDNOW under-forecasts the holdout, most of it among the
    // customers with one or two calibration repeats (0.52 expected against 0.70 actual for
    // x = 1, 1.04 against 1.39 for x = 2), as the paper's conditional-expectation figure
    // shows. The per-customer formula itself is pinned by the closed-form tests, by the
    // paper's own form of eq. 10 (bgnbd.rs) and by the worked example below, so the bound is
    // 15 %: wide enough for the model's known bias, narrow enough to catch a wrong T or t.
    let mut expected = 0.0;
    for s in &summaries {
        expected += expected_purchases(&p, s, 39.0)?;
    }
    let actual: f64 = holdout.iter().sum();
    eprintln!("holdout, 39 weeks: expected {expected:.1} repeat transactions, actual {actual}");
    assert_eq!(actual, 1882.0);
    assert!(within(expected, actual, 0.15), "{expected} vs {actual}");
    Ok(())
}

#[test]
fn the_worked_example_customer() -> anyhow::Result<()> {
    // CDNOW customer 0001 (x = 2, t_x = 30.43, T = 38.86) under the published parameters: the
    // expected purchases in the next 39 weeks are 1.226, the figure of Fader & Hardie's
    // spreadsheet walk-through of the BG/NBD.
    let p = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let s = CustomerSummary {
        x: 2.0,
        t_x: 30.43,
        t: 38.86,
        m: 0.0,
    };
    let e = expected_purchases(&p, &s, 39.0)?;
    assert!((e - 1.226).abs() < 5e-4, "{e}");
    // P(alive) by the note's formula: 1/(1 + 0.793/3.426 · (43.274/34.844)^2.243) = 0.7266.
    assert!((p_alive(&p, &s) - 0.7266).abs() < 5e-5);
    Ok(())
}

#[test]
fn cdnow_clv_telescopes_and_discounting_lowers_it() -> anyhow::Result<()> {
    // The published parameters, so this test does not depend on the fit.
    let p = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let g = GammaGamma {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };
    let (summaries, _) = calibration_and_holdout()?;
    for s in summaries.iter().take(200) {
        // Undiscounted, the months add up to the whole horizon's expected purchases.
        let undiscounted = clv(&p, &g, s, 12, 0.0)?;
        let whole = expected_purchases(&p, s, 12.0 * DAYS_PER_MONTH / DAYS_PER_WEEK)?
            * conditional_expected_value(&g, s.x, s.m)?;
        assert!(((undiscounted - whole) / whole).abs() < 1e-9, "{s:?}");
        let discounted = clv(&p, &g, s, 12, 0.01)?;
        assert!(discounted < undiscounted && discounted > 0.0, "{s:?}");
    }
    assert_eq!(clv(&p, &g, &summaries[0], 0, 0.01)?, 0.0);
    assert!(clv(&p, &g, &summaries[0], 12, f64::NAN).is_err());
    Ok(())
}

#[test]
fn a_thin_customer_base_is_refused_in_words() -> anyhow::Result<()> {
    let (summaries, _) = calibration_and_holdout()?;
    let needs_more = MinimumData {
        customers: 10,
        repeat_customers: 50,
    };
    // The first 30 customers: how many of them bought again decides the refusal.
    let few = &summaries[..30];
    let repeat = few.iter().filter(|s| s.x > 0.0).count();
    let refusal = fit_bgnbd(few, &needs_more);
    assert_eq!(
        refusal,
        Err(PredictError::TooFewRepeatCustomers {
            found: repeat,
            needed: 50
        })
    );
    assert_eq!(
        fit_bgnbd(few, &MINIMUM),
        Err(PredictError::TooFewCustomers {
            found: 30,
            needed: 500
        })
    );
    let broken = CustomerSummary {
        x: 1.0,
        t_x: 9.0,
        t: 4.0,
        m: 3.0,
    };
    assert!(matches!(
        fit_bgnbd(&[broken], &needs_more),
        Err(PredictError::InvalidSummary { index: 0, .. })
    ));
    Ok(())
}

/// A base of a million customers: CDNOW's calibration summaries 400 times over (942,800
/// customers) have the same maximum-likelihood parameters. The fit must converge on them as on
/// CDNOW itself: on the summed log-likelihood its rounding noise alone exceeded the simplex
/// tolerance, and every fit of a large base ran all its iterations unconverged.
#[test]
fn a_million_customers_converge_on_the_parameters_of_their_sample() -> anyhow::Result<()> {
    let (summaries, _) = calibration_and_holdout()?;
    let sample = fit_bgnbd(&summaries, &MINIMUM)?;
    let spend_sample = fit_gamma_gamma(&summaries, &MINIMUM)?;
    let many: Vec<CustomerSummary> = (0..400).flat_map(|_| summaries.iter().copied()).collect();

    let purchases = fit_bgnbd(&many, &MINIMUM)?;
    assert!(purchases.converged, "{purchases:?}");
    let (p, q) = (purchases.params, sample.params);
    for (got, expected) in [(p.r, q.r), (p.alpha, q.alpha), (p.a, q.a), (p.b, q.b)] {
        assert!(within(got, expected, 1e-3), "{p:?} vs {q:?}");
    }
    assert!(within(
        purchases.log_likelihood,
        400.0 * sample.log_likelihood,
        1e-9
    ));
    assert!(
        purchases.iterations <= 2 * sample.iterations,
        "{} iterations against {} for the sample",
        purchases.iterations,
        sample.iterations
    );

    let spend = fit_gamma_gamma(&many, &MINIMUM)?;
    assert!(spend.converged, "{spend:?}");
    let (g, h) = (spend.params, spend_sample.params);
    for (got, expected) in [(g.p, h.p), (g.q, h.q), (g.gamma, h.gamma)] {
        assert!(within(got, expected, 1e-3), "{g:?} vs {h:?}");
    }
    Ok(())
}
