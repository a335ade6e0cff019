//! Maximum likelihood for both models: argmin's Nelder–Mead minimises the negative summed
//! log-likelihood over the logarithms of the parameters (so every step keeps them positive),
//! restarting from the best point until a fresh simplex finds nothing better. The likelihoods
//! have no cheap gradients and four parameters at most, where Nelder–Mead is the usual choice
//! (the published fits used Excel's Solver, `lifetimes` uses scipy's Nelder–Mead).

use argmin::core::{CostFunction, Error, Executor, State, TerminationStatus};
use argmin::solver::neldermead::NelderMead;

use super::PredictError;

/// Stop a run when the costs of the simplex' vertices spread less than this, in log-likelihood
/// per customer (the search minimises the mean, see [`minimise`]): far below any difference a
/// prediction could show.
const SD_TOLERANCE: f64 = 1e-10;
/// Iterations per run; the CDNOW fits need a few hundred.
const MAX_ITERS: u64 = 5_000;
/// Runs at most: the first from the start, then restarts from the best point found.
const MAX_RUNS: u32 = 6;
/// Initial simplex edge in log-parameter space: the first run explores by a factor e^0.5,
/// restarts more locally.
const FIRST_STEP: f64 = 0.5;
const RESTART_STEP: f64 = 0.05;

/// The minimum found and how the search ended.
#[derive(Debug, Clone)]
pub(super) struct Minimum {
    /// The log-parameters at the minimum.
    pub(super) point: Vec<f64>,
    pub(super) cost: f64,
    pub(super) iterations: u64,
    pub(super) converged: bool,
    pub(super) termination: String,
}

/// A cost over log-parameters in which anything not finite counts as +∞, so a NaN from an
/// extreme trial point is a rejected step, never a value the simplex compares.
#[derive(Clone, Copy)]
struct Objective<'a> {
    cost: &'a dyn Fn(&[f64]) -> f64,
    /// What the cost is divided by.
    customers: f64,
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, point: &Self::Param) -> Result<f64, Error> {
        let value = (self.cost)(point) / self.customers;
        Ok(if value.is_finite() {
            value
        } else {
            f64::INFINITY
        })
    }
}

/// Minimises `cost`, a sum over `customers` customers, from `start` (both in log-parameter
/// space). The search runs on the mean per customer, so its tolerance means the same at any
/// size of base: on the sum, a million customers' rounding noise alone (~10⁻⁹ of a cost near
/// 10⁷) kept the simplex from ever spreading less than the tolerance, and every fit ran all
/// its iterations (the 1M bench: over 17 minutes). The answer's `cost` is the sum again.
pub(super) fn minimise(
    cost: impl Fn(&[f64]) -> f64,
    start: &[f64],
    customers: usize,
) -> Result<Minimum, PredictError> {
    let customers = customers.max(1) as f64;
    let objective = Objective {
        cost: &cost,
        customers,
    };
    let mut best_point = start.to_vec();
    let mut best_cost = objective
        .cost(&best_point)
        .map_err(|e| PredictError::FitFailed(e.to_string()))?;
    let mut iterations = 0;
    let mut termination = String::new();
    let mut converged = false;
    for run in 0..MAX_RUNS {
        let step = if run == 0 { FIRST_STEP } else { RESTART_STEP };
        let solver = NelderMead::new(simplex(&best_point, step))
            .with_sd_tolerance(SD_TOLERANCE)
            .map_err(|e| PredictError::FitFailed(e.to_string()))?;
        let result = Executor::new(objective, solver)
            .configure(|state| state.max_iters(MAX_ITERS))
            .run()
            .map_err(|e| PredictError::FitFailed(e.to_string()))?;
        let state = result.state();
        iterations += state.get_iter();
        let solver_converged = matches!(
            state.get_termination_status(),
            TerminationStatus::Terminated(argmin::core::TerminationReason::SolverConverged)
        );
        termination = state.get_termination_status().to_string();
        let run_cost = state.get_best_cost();
        let improved = best_cost - run_cost;
        if run_cost < best_cost
            && let Some(point) = state.get_best_param()
        {
            best_point.clone_from(point);
            best_cost = run_cost;
        }
        // A restart that cannot improve by more than the tolerance confirms the optimum.
        if run > 0 && solver_converged && improved <= SD_TOLERANCE {
            converged = true;
            break;
        }
    }
    if !best_cost.is_finite() {
        return Err(PredictError::FitFailed(
            "no parameters give the data a finite likelihood".to_owned(),
        ));
    }
    Ok(Minimum {
        point: best_point,
        cost: best_cost * customers,
        iterations,
        converged,
        termination,
    })
}

/// `point` and one vertex per coordinate, moved by `step`.
fn simplex(point: &[f64], step: f64) -> Vec<Vec<f64>> {
    let mut vertices = vec![point.to_vec()];
    for i in 0..point.len() {
        let mut vertex = point.to_vec();
        vertex[i] += step;
        vertices.push(vertex);
    }
    vertices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_bowl_and_treats_nan_as_infinite() -> anyhow::Result<()> {
        // Minimum at (1, −2); NaN everywhere x > 3, which the search must walk away from.
        let bowl = |p: &[f64]| {
            if p[0] > 3.0 {
                f64::NAN
            } else {
                (p[0] - 1.0).powi(2) + 10.0 * (p[1] + 2.0).powi(2) + 5.0
            }
        };
        let found = minimise(bowl, &[2.9, 0.0], 1)?;
        assert!(found.converged, "{found:?}");
        assert!((found.point[0] - 1.0).abs() < 1e-4, "{found:?}");
        assert!((found.point[1] + 2.0).abs() < 1e-4, "{found:?}");
        assert!((found.cost - 5.0).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn an_everywhere_infinite_cost_is_a_failed_fit() {
        assert!(matches!(
            minimise(|_: &[f64]| f64::NAN, &[0.0, 0.0], 1),
            Err(PredictError::FitFailed(_))
        ));
    }
}
