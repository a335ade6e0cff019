//! The Gauss hypergeometric series ₂F₁(a, b; c; z) for |z| < 1, which the BG/NBD expected
//! purchases need. Summed term by term with a proven bound on the remainder (not "the last term
//! was small"), in log space so that parameters in the hundreds neither overflow nor lose the
//! sum, and with a cap on the number of terms.

use super::PredictError;

/// Relative accuracy the series stops at.
const TOLERANCE: f64 = 1e-16;
/// Most terms summed: z = 0.999 needs about 40,000 for 1e-16, and a dropout distribution
/// collapsed to one value (BG/NBD a in the millions, which small bases can fit) with z above
/// ½, where no transformation helps, needs a few million (about 15 ms); the cap only stops
/// input no fit produces.
const MAX_TERMS: u32 = 20_000_000;

/// A real number as sign · e^ln_abs, for sums whose terms may not fit an f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LogValue {
    pub(super) ln_abs: f64,
    pub(super) sign: f64,
}

impl LogValue {
    pub(super) fn value(self) -> f64 {
        self.sign * self.ln_abs.exp()
    }
}

/// ₂F₁(a, b; c; z) = Σ_{n≥0} (a)_n (b)_n / ((c)_n n!) zⁿ for |z| < 1 and c not 0, −1, −2, …
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64, PredictError> {
    Ok(series(a, b, c, z, 0, 1.0)?.value())
}

/// Σ_{n≥n0} tₙ where t_{n0} = `first` and t_{n+1} = tₙ · (a+n)(b+n) / ((c+n)(n+1)) · z: the
/// tail of a ₂F₁-shaped series from term `n0` on (`n0` = 0, `first` = 1 is ₂F₁ itself).
///
/// Stopping rule: once n + min(a, b, c, 1) > 0 every later ratio factor is positive and
/// monotone in n, so (m+a)/(m+c) for m ≥ n is at most max(1, (n+a)/(n+c)) (it rises towards 1
/// when c > a and falls otherwise), and likewise (m+b)/(m+1) — or, paired the other way,
/// (m+b)/(m+c) and (m+a)/(m+1); the smaller of the two products bounds the ratio. With ρ̄ = |z| times both maxima
/// below 1, the terms after tₙ sum to at most |tₙ| ρ̄ / (1 − ρ̄); the loop stops when that is
/// below TOLERANCE · |sum|.
pub(super) fn series(
    a: f64,
    b: f64,
    c: f64,
    z: f64,
    n0: u32,
    first: f64,
) -> Result<LogValue, PredictError> {
    let fail = |reason| PredictError::Series { a, b, c, z, reason };
    if ![a, b, c, z, first].iter().all(|v| v.is_finite()) {
        return Err(fail("has a parameter that is not a finite number"));
    }
    if z.abs() >= 1.0 {
        return Err(fail("is summed only for |z| < 1"));
    }
    if first == 0.0 || z == 0.0 {
        return Ok(LogValue {
            ln_abs: first.abs().ln(),
            sign: first.signum(),
        });
    }
    let ln_z = z.abs().ln();
    // The current term as sign · e^ln_term.
    let mut ln_term = first.abs().ln();
    let mut sign = first.signum();
    // The sum so far as acc · e^scale, rescaled whenever a term exceeds e^scale.
    let mut scale = ln_term;
    let mut acc = sign;
    let mut n = f64::from(n0);
    for _ in 0..MAX_TERMS {
        let (fa, fb, fc) = (a + n, b + n, c + n);
        if fc == 0.0 {
            return Err(fail("has a pole (c is zero or a negative whole number)"));
        }
        if fa == 0.0 || fb == 0.0 {
            // Every later term is zero: the series is a polynomial and the sum is exact.
            return finish(acc, scale);
        }
        let ratio = fa * fb / (fc * (n + 1.0));
        if n + a.min(b).min(c).min(1.0) > 0.0 {
            // Either numerator may be paired with either denominator; the tighter pairing
            // matters when one parameter is huge (b in the millions with c ≈ a + b: paired with
            // c its factor is below 1 at once, paired with n + 1 above 1 for a million terms).
            let bound_ratio = z.abs()
                * ((fa / fc).max(1.0) * (fb / (n + 1.0)).max(1.0))
                    .min((fb / fc).max(1.0) * (fa / (n + 1.0)).max(1.0));
            if bound_ratio < 1.0 {
                let ln_tail = ln_term + bound_ratio.ln() - (-bound_ratio).ln_1p();
                let ln_sum = acc.abs().ln() + scale;
                if ln_tail < ln_sum + TOLERANCE.ln() {
                    return finish(acc, scale);
                }
            }
        }
        ln_term += ratio.abs().ln() + ln_z;
        sign *= ratio.signum() * z.signum();
        n += 1.0;
        if ln_term > scale {
            acc = acc * (scale - ln_term).exp() + sign;
            scale = ln_term;
        } else {
            acc += sign * (ln_term - scale).exp();
        }
    }
    Err(fail("did not converge within the term cap"))
}

fn finish(acc: f64, scale: f64) -> Result<LogValue, PredictError> {
    Ok(LogValue {
        ln_abs: acc.abs().ln() + scale,
        sign: if acc < 0.0 { -1.0 } else { 1.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: f64, b: f64, c: f64, z: f64, expected: f64) -> anyhow::Result<()> {
        let got = hyp2f1(a, b, c, z)?;
        let err = ((got - expected) / expected).abs();
        anyhow::ensure!(
            err < 1e-13,
            "2F1({a},{b};{c};{z}) = {got}, expected {expected} (relative error {err:e})"
        );
        Ok(())
    }

    #[test]
    fn closed_forms() -> anyhow::Result<()> {
        for z in [1e-9, 0.1, 0.47, 0.8, 0.95, 0.995, -0.5] {
            // ₂F₁(1, 1; 2; z) = −ln(1−z)/z.
            check(1.0, 1.0, 2.0, z, -(-z).ln_1p() / z)?;
            // ₂F₁(a, b; b; z) = (1−z)^(−a).
            check(2.5, 3.7, 3.7, z, (1.0 - z).powf(-2.5))?;
            check(0.243, 7.0, 7.0, z, (1.0 - z).powf(-0.243))?;
        }
        for w in [0.1, 0.5, 0.9] {
            // ₂F₁(1/2, 1/2; 3/2; w²) = arcsin(w)/w.
            check(0.5, 0.5, 1.5, w * w, w.asin() / w)?;
        }
        // A polynomial: ₂F₁(−2, b; c; z) = 1 − 2bz/c + b(b+1)z²/(c(c+1)).
        let (b, c, z) = (3.0, 5.0, 0.6);
        check(
            -2.0,
            b,
            c,
            z,
            1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0)),
        )?;
        Ok(())
    }

    #[test]
    fn large_parameters_neither_overflow_nor_lose_the_sum() -> anyhow::Result<()> {
        // ₂F₁(a, b; b; z) = (1−z)^(−a): with a = 800 at z = 0.9 the sum is 10^800, far past
        // f64, and its terms peak near 10^797; the log is still exact.
        let got = series(800.0, 900.0, 900.0, 0.9, 0, 1.0)?;
        let expected = -800.0 * 0.1_f64.ln();
        assert!(((got.ln_abs - expected) / expected).abs() < 1e-12);
        assert_eq!(got.sign, 1.0);
        Ok(())
    }

    #[test]
    fn refusals() {
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_err());
        assert!(hyp2f1(1.0, 1.0, -3.0, 0.5).is_err());
        assert!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5).is_err());
    }
}
