//! The prediction configuration (prediction.proto `PredictionConfig`, configs row
//! "prediction"): what the per-customer predictions are made with (CLV horizon and discount,
//! the churn threshold) and the least data a fit accepts. The fitted parameters themselves do
//! not depend on it.

use super::predict::MinimumData;

/// The prediction configuration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PredictionConfig {
    /// Months of CLV, 1–120.
    pub horizon_months: i32,
    /// Monthly discount rate of CLV, 0–0.5.
    pub monthly_discount_rate: f64,
    /// Probability alive below which a customer is at churn risk, strictly between 0 and 1.
    pub churn_threshold: f64,
    /// A fit is refused with fewer customers who purchased, 10–10,000,000.
    pub min_customers: i64,
    /// A fit is refused with fewer repeat customers, 10–10,000,000.
    pub min_repeat_customers: i64,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            horizon_months: 12,
            monthly_discount_rate: 0.01,
            churn_threshold: 0.3,
            min_customers: 100,
            min_repeat_customers: 50,
        }
    }
}

/// The horizon of `predicted.purchases_90d` and CustomerPrediction.expected_purchases_90d.
pub const PURCHASES_HORIZON_DAYS: f64 = 90.0;

impl PredictionConfig {
    /// Why the config is invalid: `(field, description)` for every value out of range.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut bad = Vec::new();
        if !(1..=120).contains(&self.horizon_months) {
            bad.push(("horizon_months", "must be between 1 and 120".to_owned()));
        }
        if !(0.0..=0.5).contains(&self.monthly_discount_rate) {
            bad.push((
                "monthly_discount_rate",
                "must be between 0 and 0.5 (0.01 is 1 % a month)".to_owned(),
            ));
        }
        if !(self.churn_threshold > 0.0 && self.churn_threshold < 1.0) {
            bad.push((
                "churn_threshold",
                "must be strictly between 0 and 1".to_owned(),
            ));
        }
        for (field, value) in [
            ("min_customers", self.min_customers),
            ("min_repeat_customers", self.min_repeat_customers),
        ] {
            if !(10..=10_000_000).contains(&value) {
                bad.push((field, "must be between 10 and 10,000,000".to_owned()));
            }
        }
        bad
    }

    /// The least data a fit accepts under this config.
    pub fn minimum_data(&self) -> MinimumData {
        MinimumData {
            customers: usize::try_from(self.min_customers).unwrap_or(usize::MAX),
            repeat_customers: usize::try_from(self.min_repeat_customers).unwrap_or(usize::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_every_range_is_checked() {
        assert!(PredictionConfig::default().validate().is_empty());
        let bad = PredictionConfig {
            horizon_months: 0,
            monthly_discount_rate: 0.6,
            churn_threshold: 1.0,
            min_customers: 9,
            min_repeat_customers: 10_000_001,
        };
        let fields: Vec<&str> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "horizon_months",
                "monthly_discount_rate",
                "churn_threshold",
                "min_customers",
                "min_repeat_customers"
            ]
        );
        let nan = PredictionConfig {
            monthly_discount_rate: f64::NAN,
            churn_threshold: f64::NAN,
            ..PredictionConfig::default()
        };
        assert_eq!(nan.validate().len(), 2);
    }
}
