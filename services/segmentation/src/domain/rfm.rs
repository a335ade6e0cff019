//! RFM scoring as rfm.proto defines it: the config, the four upper bounds per dimension, the
//! 1–5 scores, the combined frequency-monetary score and the 25-cell group grid. The raw
//! values and the quintile bounds are computed in Postgres (`store::rfm`); this module holds
//! the rules both the full run and the per-customer refresh apply.

use chrono::{DateTime, Utc};

/// Default length of the frequency and monetary window.
pub const DEFAULT_WINDOW_DAYS: i32 = 365;
/// Default currency of the monetary value (the deployment's reporting currency).
pub const DEFAULT_CURRENCY: &str = "CNY";

/// Most currency rates a config holds.
pub const MAX_CURRENCY_RATES: usize = 100;
/// Largest amount on either side of a currency rate, in minor units.
pub const MAX_RATE_AMOUNT: i64 = 1_000_000_000_000;
/// Largest fixed recency bound, days (100 years, the rules' `days_value` bound).
pub const MAX_RECENCY_DAYS: i64 = 36_500;
/// Largest fixed frequency bound, purchases in the window.
pub const MAX_FREQUENCY: i64 = 1_000_000_000;
/// Largest fixed monetary bound, minor units: 10^15, the bound of money in any request.
pub const MAX_MONETARY: i64 = 1_000_000_000_000_000;

/// The RFM configuration (configs row "rfm").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfmConfig {
    pub window_days: i32,
    pub currency: String,
    /// Business-defined bounds; `None` means quintiles computed by each full run.
    pub fixed_thresholds: Option<Thresholds>,
    /// How purchases in other currencies count towards monetary value; a currency without a
    /// rate does not count. Kept in currency order once validated.
    pub currency_rates: Vec<CurrencyRate>,
}

impl Default for RfmConfig {
    fn default() -> Self {
        Self {
            window_days: DEFAULT_WINDOW_DAYS,
            currency: DEFAULT_CURRENCY.to_owned(),
            fixed_thresholds: None,
            // No built-in rates: rates move, and a stale default would skew scores unseen.
            currency_rates: Vec::new(),
        }
    }
}

/// `amount_minor` of `currency` counts as `value_minor` of `value_currency` (the RFM
/// currency): an exact ratio, both sides in their own minor units.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CurrencyRate {
    pub currency: String,
    pub amount_minor: i64,
    /// Kept although it must equal the config's currency, so a change of that currency can
    /// never silently reinterpret the rates.
    pub value_currency: String,
    pub value_minor: i64,
}

/// Every currency that counts towards monetary value with its exact ratio, as parallel lists
/// `(currencies, amounts, values)`: the config's currency at 1:1, then each rate. A purchase
/// sum `s` in `currencies[i]` counts as `floor(s × values[i] / amounts[i])`.
pub fn counted_currencies(config: &RfmConfig) -> (Vec<String>, Vec<i64>, Vec<i64>) {
    let mut currencies = vec![config.currency.clone()];
    let mut amounts = vec![1];
    let mut values = vec![1];
    for rate in &config.currency_rates {
        currencies.push(rate.currency.clone());
        amounts.push(rate.amount_minor);
        values.push(rate.value_minor);
    }
    (currencies, amounts, values)
}

/// Monetary value of per-currency purchase sums as rfm.proto defines it (and `store::rfm`
/// computes in SQL): each counted currency's sum converted exactly and rounded down, summed;
/// currencies without a rate excluded.
pub fn monetary_value(config: &RfmConfig, sums: &[(&str, i64)]) -> i64 {
    let (currencies, amounts, values) = counted_currencies(config);
    let total: i128 = sums
        .iter()
        .filter_map(|(currency, sum)| {
            let i = currencies.iter().position(|c| c == currency)?;
            Some(i128::from(*sum) * i128::from(values[i]) / i128::from(amounts[i]))
        })
        .sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
}

/// Four ascending upper bounds per dimension; monetary in minor units of the config currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    pub recency_days: [i32; 4],
    pub frequency: [i64; 4],
    pub monetary_minor: [i64; 4],
}

/// Raw RFM values of one scored customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmValues {
    pub recency_days: i32,
    pub frequency: i64,
    pub monetary_minor: i64,
}

/// Scores 1–5 and the group of one scored customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmScores {
    pub recency: i32,
    pub frequency: i32,
    pub monetary: i32,
    pub group: RfmGroup,
}

impl RfmScores {
    /// (F + M + 1) / 2 rounded down.
    pub fn frequency_monetary(&self) -> i32 {
        frequency_monetary_score(self.frequency, self.monetary)
    }
}

/// The named RFM groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RfmGroup {
    Champions,
    Loyal,
    PotentialLoyalist,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CannotLose,
    Hibernating,
    Lost,
}

impl RfmGroup {
    /// Every group, in enum order.
    pub const ALL: [RfmGroup; 11] = [
        Self::Champions,
        Self::Loyal,
        Self::PotentialLoyalist,
        Self::NewCustomers,
        Self::Promising,
        Self::NeedAttention,
        Self::AboutToSleep,
        Self::AtRisk,
        Self::CannotLose,
        Self::Hibernating,
        Self::Lost,
    ];

    /// The slug stored in `customer_facts.rfm_group` and written in rules.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Champions => "champions",
            Self::Loyal => "loyal",
            Self::PotentialLoyalist => "potential_loyalist",
            Self::NewCustomers => "new_customers",
            Self::Promising => "promising",
            Self::NeedAttention => "need_attention",
            Self::AboutToSleep => "about_to_sleep",
            Self::AtRisk => "at_risk",
            Self::CannotLose => "cannot_lose",
            Self::Hibernating => "hibernating",
            Self::Lost => "lost",
        }
    }

    /// The group of `slug`; `None` for "" (not scored) or an unknown slug.
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.slug() == slug)
    }
}

/// Frequency or monetary score: 1 when value ≤ b1, …, 4 when ≤ b4, else 5.
pub fn ascending_score<T: PartialOrd>(value: T, bounds: &[T; 4]) -> i32 {
    bounds
        .iter()
        .position(|b| value <= *b)
        .map_or(5, |i| i as i32 + 1)
}

/// Recency score: 5 when days ≤ b1, 4 when ≤ b2, 3 when ≤ b3, 2 when ≤ b4, else 1.
pub fn recency_score(days: i32, bounds: &[i32; 4]) -> i32 {
    6 - ascending_score(days, bounds)
}

/// (F + M + 1) / 2 rounded down.
pub fn frequency_monetary_score(frequency: i32, monetary: i32) -> i32 {
    (frequency + monetary + 1) / 2
}

/// The group of the cell (R, FM), both 1–5 (the grid of rfm.proto).
pub fn group(recency: i32, fm: i32) -> RfmGroup {
    use RfmGroup::*;
    match (recency, fm) {
        (5, 1) => NewCustomers,
        (5, 2 | 3) => PotentialLoyalist,
        (5, _) => Champions,
        (4, 1) => Promising,
        (4, 2 | 3) => PotentialLoyalist,
        (4, _) => Loyal,
        (3, 1 | 2) => AboutToSleep,
        (3, 3) => NeedAttention,
        (3, _) => Loyal,
        (2, 1 | 2) => Hibernating,
        (2, 3 | 4) => AtRisk,
        (2, _) => CannotLose,
        (_, 1) => Lost,
        (_, 2) => Hibernating,
        (_, 3 | 4) => AtRisk,
        (_, _) => CannotLose,
    }
}

/// Scores `values` with `bounds`.
pub fn score(values: &RfmValues, bounds: &Thresholds) -> RfmScores {
    let recency = recency_score(values.recency_days, &bounds.recency_days);
    let frequency = ascending_score(values.frequency, &bounds.frequency);
    let monetary = ascending_score(values.monetary_minor, &bounds.monetary_minor);
    RfmScores {
        recency,
        frequency,
        monetary,
        group: group(recency, frequency_monetary_score(frequency, monetary)),
    }
}

/// The 25 cells of the grid as `(R, FM, group slug)`, for SQL that assigns groups in bulk.
pub fn grid() -> Vec<(i32, i32, &'static str)> {
    (1..=5)
        .flat_map(|r| (1..=5).map(move |fm| (r, fm, group(r, fm).slug())))
        .collect()
}

/// The stored RFM state: the config, the bounds of the last full run and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfmState {
    pub config: RfmConfig,
    pub computed_thresholds: Option<Thresholds>,
    pub compute_time: Option<DateTime<Utc>>,
    /// Customers segmentation knew at the last full run: when their number has doubled since,
    /// the bounds are recomputed (see `jobs::scheduler::ensure_rfm_bounds`).
    pub computed_customers: Option<i64>,
    pub update_time: Option<DateTime<Utc>>,
    pub etag: String,
}

impl RfmState {
    /// The bounds scores use now: the fixed ones, else those of the last full run.
    pub fn thresholds(&self) -> Option<Thresholds> {
        self.config.fixed_thresholds.or(self.computed_thresholds)
    }
}

/// Why an RFM config is invalid: `(field relative to the config, description)`.
pub fn validate(config: &RfmConfig) -> Vec<(String, String)> {
    let mut bad: Vec<(String, String)> = Vec::new();
    let mut add =
        |field: &str, description: &str| bad.push((field.to_owned(), description.to_owned()));
    if !(30..=1095).contains(&config.window_days) {
        add("window_days", "must be between 30 and 1095");
    }
    if !is_currency_code(&config.currency) {
        add(
            "currency",
            "must be an ISO-4217 code of three upper-case letters",
        );
    }
    if config.currency_rates.len() > MAX_CURRENCY_RATES {
        add("currency_rates", "at most 100 rates");
    }
    let amounts = 1..=MAX_RATE_AMOUNT;
    for (i, rate) in config.currency_rates.iter().enumerate() {
        let field = |name: &str| format!("currency_rates[{i}].{name}");
        if !is_currency_code(&rate.currency) {
            add(
                &field("amount.currency"),
                "must be an ISO-4217 code of three upper-case letters",
            );
        } else if rate.currency == config.currency {
            add(
                &field("amount.currency"),
                "the RFM currency always counts at face value; it takes no rate",
            );
        } else if config.currency_rates[..i]
            .iter()
            .any(|r| r.currency == rate.currency)
        {
            add(&field("amount.currency"), "one rate per currency");
        }
        if !amounts.contains(&rate.amount_minor) {
            add(&field("amount.amount_minor"), "must be 1 to 10^12");
        }
        if rate.value_currency != config.currency {
            add(
                &field("value.currency"),
                "must be the RFM currency (replace the rates when changing it)",
            );
        }
        if !amounts.contains(&rate.value_minor) {
            add(&field("value.amount_minor"), "must be 1 to 10^12");
        }
    }
    if let Some(t) = &config.fixed_thresholds {
        let ascending = |v: &[i64]| v.windows(2).all(|w| w[0] < w[1]);
        let recency: Vec<i64> = t.recency_days.iter().map(|&d| i64::from(d)).collect();
        for (field, values, max, range) in [
            (
                "fixed_thresholds.recency_days",
                recency.as_slice(),
                MAX_RECENCY_DAYS,
                "0–36,500",
            ),
            (
                "fixed_thresholds.frequency",
                &t.frequency[..],
                MAX_FREQUENCY,
                "0–1,000,000,000",
            ),
            (
                "fixed_thresholds.monetary",
                &t.monetary_minor[..],
                MAX_MONETARY,
                "0–10^15",
            ),
        ] {
            if !ascending(values) || values.iter().any(|&v| !(0..=max).contains(&v)) {
                bad.push((
                    field.to_owned(),
                    format!("must hold 4 strictly ascending values, each {range}"),
                ));
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_the_proto_table() {
        let rows: Vec<Vec<&str>> = (1..=5)
            .rev()
            .map(|r| (1..=5).map(|fm| group(r, fm).slug()).collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![
                    "new_customers",
                    "potential_loyalist",
                    "potential_loyalist",
                    "champions",
                    "champions"
                ],
                vec![
                    "promising",
                    "potential_loyalist",
                    "potential_loyalist",
                    "loyal",
                    "loyal"
                ],
                vec![
                    "about_to_sleep",
                    "about_to_sleep",
                    "need_attention",
                    "loyal",
                    "loyal"
                ],
                vec![
                    "hibernating",
                    "hibernating",
                    "at_risk",
                    "at_risk",
                    "cannot_lose"
                ],
                vec!["lost", "hibernating", "at_risk", "at_risk", "cannot_lose"],
            ]
        );
    }

    #[test]
    fn monetary_converts_each_currency_exactly_and_rounds_it_down() {
        let rate = |currency: &str, amount_minor, value_minor| CurrencyRate {
            currency: currency.to_owned(),
            amount_minor,
            value_currency: "CNY".to_owned(),
            value_minor,
        };
        let config = RfmConfig {
            currency_rates: vec![rate("USD", 100, 712), rate("JPY", 100, 478)],
            ..RfmConfig::default()
        };
        // 100.00 CNY + 250.00 USD at 7.12 (1,780.00 CNY) + 1,001 JPY at 4.78 CNY per 100 JPY
        // (4,784.78 fen, rounded down to 4,784) + 50.00 EUR without a rate (excluded).
        let sums = [
            ("CNY", 10_000),
            ("USD", 25_000),
            ("JPY", 1_001),
            ("EUR", 5_000),
        ];
        assert_eq!(monetary_value(&config, &sums), 10_000 + 178_000 + 4_784);
        assert_eq!(monetary_value(&RfmConfig::default(), &sums), 10_000);
        let bad = RfmConfig {
            currency_rates: vec![rate("CNY", 1, 1), rate("USD", 0, 712), rate("USD", 1, 7)],
            ..RfmConfig::default()
        };
        let fields: Vec<String> = validate(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "currency_rates[0].amount.currency",
                "currency_rates[1].amount.amount_minor",
                "currency_rates[2].amount.currency",
            ]
        );
    }

    #[test]
    fn scores_use_upper_bounds_inclusively() {
        let b = [1_i64, 2, 4, 8];
        let got: Vec<i32> = [0, 1, 2, 3, 4, 8, 9]
            .into_iter()
            .map(|v| ascending_score(v, &b))
            .collect();
        assert_eq!(got, vec![1, 1, 2, 3, 3, 4, 5]);
        assert_eq!(recency_score(10, &[10, 20, 30, 40]), 5);
        assert_eq!(recency_score(41, &[10, 20, 30, 40]), 1);
        assert_eq!(frequency_monetary_score(5, 4), 5);
        assert_eq!(frequency_monetary_score(1, 2), 2);
    }
}
