//! Lifecycle stages and churn risk as lifecycle.proto defines them: the config with its ranges
//! and ordering, the stages, and the rules deciding them. Full runs and per-customer refreshes
//! evaluate the rules in Postgres (`store::lifecycle`), over the same purchase history; this
//! module is their specification in Rust and what the API validates against.
//!
//! "A purchase made while the stage was DORMANT or CHURNED" (rule 6) is decided from the
//! history itself: at a purchase p the stage was DORMANT or CHURNED exactly when the previous
//! purchase was at least `dormant_after_days` before p (rules 2 and 3 come first and depend
//! only on that gap). So a stage never depends on when runs happened to take place.

/// The lifecycle configuration (configs row "lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleConfig {
    pub new_window_days: i32,
    pub active_window_days: i32,
    pub active_min_purchases: i32,
    pub at_risk_after_days: i32,
    pub dormant_after_days: i32,
    pub churned_after_days: i32,
    pub reactivated_window_days: i32,
    pub churn_risk_gap_multiplier: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            new_window_days: 30,
            active_window_days: 90,
            active_min_purchases: 1,
            at_risk_after_days: 60,
            dormant_after_days: 120,
            churned_after_days: 365,
            reactivated_window_days: 30,
            churn_risk_gap_multiplier: 2.0,
        }
    }
}

impl LifecycleConfig {
    /// Why the config is invalid: `(field, description)` for every range or ordering broken.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut bad = Vec::new();
        let mut range = |field: &'static str, value: i32, low: i32, high: i32| {
            if !(low..=high).contains(&value) {
                bad.push((field, format!("must be between {low} and {high}")));
            }
        };
        range("new_window_days", self.new_window_days, 1, 365);
        range("active_window_days", self.active_window_days, 1, 730);
        range("active_min_purchases", self.active_min_purchases, 1, 1000);
        range("at_risk_after_days", self.at_risk_after_days, 1, 3650);
        range("dormant_after_days", self.dormant_after_days, 1, 3650);
        range("churned_after_days", self.churned_after_days, 1, 3650);
        range(
            "reactivated_window_days",
            self.reactivated_window_days,
            1,
            365,
        );
        if !(1.0..=10.0).contains(&self.churn_risk_gap_multiplier) {
            bad.push((
                "churn_risk_gap_multiplier",
                "must be between 1.0 and 10.0".to_owned(),
            ));
        }
        if self.dormant_after_days <= self.at_risk_after_days {
            bad.push((
                "dormant_after_days",
                "must be greater than at_risk_after_days".to_owned(),
            ));
        }
        if self.churned_after_days <= self.dormant_after_days {
            bad.push((
                "churned_after_days",
                "must be greater than dormant_after_days".to_owned(),
            ));
        }
        bad
    }
}

/// The stage of the customer lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Prospect,
    New,
    Active,
    AtRisk,
    Dormant,
    Churned,
    Reactivated,
}

impl Stage {
    /// Every stage, in enum order.
    pub const ALL: [Stage; 7] = [
        Self::Prospect,
        Self::New,
        Self::Active,
        Self::AtRisk,
        Self::Dormant,
        Self::Churned,
        Self::Reactivated,
    ];

    /// The slug stored in `customer_facts.lifecycle_stage` and written in rules.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Prospect => "prospect",
            Self::New => "new",
            Self::Active => "active",
            Self::AtRisk => "at_risk",
            Self::Dormant => "dormant",
            Self::Churned => "churned",
            Self::Reactivated => "reactivated",
        }
    }

    /// The stage of `slug`; `None` for "" or an unknown slug.
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.slug() == slug)
    }
}

/// What the rules read of one customer's purchases at the evaluation time T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurchaseHistory {
    /// Whole days since the last purchase.
    pub days_since_last: i32,
    /// Whole days since the first purchase... as a duration in days (fractional).
    pub days_since_first: f64,
    /// Purchases in the last `active_window_days`.
    pub active_window_purchases: i64,
    /// Days since the latest purchase made while DORMANT or CHURNED, if any.
    pub days_since_reactivation: Option<f64>,
    /// Mean gap between consecutive purchases in days, when at least two.
    pub mean_gap_days: Option<f64>,
}

/// A customer's stage, churn risk score and flag at T (`None` history = never purchased).
pub fn decide(history: Option<&PurchaseHistory>, config: &LifecycleConfig) -> (Stage, f64, bool) {
    let Some(h) = history else {
        return (Stage::Prospect, 0.0, false);
    };
    let d = h.days_since_last;
    let stage = if d >= config.churned_after_days {
        Stage::Churned
    } else if d >= config.dormant_after_days {
        Stage::Dormant
    } else if d >= config.at_risk_after_days {
        Stage::AtRisk
    } else if h.days_since_first < f64::from(config.new_window_days) {
        Stage::New
    } else if h
        .days_since_reactivation
        .is_some_and(|r| r < f64::from(config.reactivated_window_days))
    {
        Stage::Reactivated
    } else if h.active_window_purchases >= i64::from(config.active_min_purchases) {
        Stage::Active
    } else {
        Stage::AtRisk
    };
    let gap = h
        .mean_gap_days
        .unwrap_or(f64::from(config.at_risk_after_days));
    let score = churn_risk_score(d, gap, config.churn_risk_gap_multiplier);
    match stage {
        Stage::Prospect | Stage::Churned => (stage, 0.0, false),
        Stage::AtRisk | Stage::Dormant => (stage, score, true),
        Stage::New | Stage::Active | Stage::Reactivated => (stage, score, score >= 1.0),
    }
}

/// min(1, d / (multiplier × gap)); a zero gap (purchases at the same instant) counts as
/// fully at risk once a day has passed.
pub fn churn_risk_score(days_since_last: i32, gap_days: f64, multiplier: f64) -> f64 {
    let denominator = multiplier * gap_days;
    if denominator <= 0.0 {
        return if days_since_last > 0 { 1.0 } else { 0.0 };
    }
    (f64::from(days_since_last) / denominator).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(last: i32, first: f64, active: i64) -> PurchaseHistory {
        PurchaseHistory {
            days_since_last: last,
            days_since_first: first,
            active_window_purchases: active,
            days_since_reactivation: None,
            mean_gap_days: None,
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let c = LifecycleConfig::default();
        let stage = |h: Option<PurchaseHistory>| decide(h.as_ref(), &c).0;
        assert_eq!(stage(None), Stage::Prospect);
        assert_eq!(stage(Some(history(365, 400.0, 0))), Stage::Churned);
        assert_eq!(stage(Some(history(120, 400.0, 0))), Stage::Dormant);
        assert_eq!(stage(Some(history(60, 400.0, 0))), Stage::AtRisk);
        assert_eq!(stage(Some(history(59, 29.9, 1))), Stage::New);
        assert_eq!(stage(Some(history(10, 300.0, 1))), Stage::Active);
        assert_eq!(stage(Some(history(10, 300.0, 0))), Stage::AtRisk);
        let mut back = history(5, 300.0, 1);
        back.days_since_reactivation = Some(5.0);
        assert_eq!(stage(Some(back)), Stage::Reactivated);
    }

    #[test]
    fn ordering_and_ranges_name_fields() {
        let c = LifecycleConfig {
            dormant_after_days: 60,
            churn_risk_gap_multiplier: 0.5,
            ..LifecycleConfig::default()
        };
        let fields: Vec<&str> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec!["churn_risk_gap_multiplier", "dormant_after_days"]
        );
    }
}
