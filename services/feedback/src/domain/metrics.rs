//! NPS, CSAT and CES arithmetic over aggregated counts.
//!
//! The counting itself happens in Postgres (`store::metrics`); this module turns counts into
//! scores. Omitted answers (skipped or dismissed) are counted apart and never enter a ratio,
//! and an empty set has no score rather than 0.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::survey::TouchpointKind;

/// How to group metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Totals only.
    None,
    /// Calendar day in the time zone.
    Day,
    /// ISO week (Monday first) in the time zone.
    Week,
    /// Calendar month in the time zone.
    Month,
    /// Response channel.
    Channel,
    /// Survey.
    Survey,
}

/// What to compute metrics over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsQuery {
    /// Surveys; empty means all.
    pub survey_ids: Vec<Uuid>,
    /// Inclusive start.
    pub start: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub end: Option<DateTime<Utc>>,
    /// Channels; empty means all.
    pub channels: Vec<String>,
    /// Touchpoint kinds; empty means all.
    pub touchpoint_kinds: Vec<TouchpointKind>,
    /// Grouping.
    pub grouping: Grouping,
    /// IANA time zone for time buckets.
    pub time_zone: String,
    /// Only responses whose customer was in this segment when responding; empty means any.
    pub segment_id: String,
}

/// Counts of one score question over a set of responses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScoreCounts {
    /// Answers with a score.
    pub answered: i64,
    /// Answers omitted (skipped or dismissed).
    pub omitted: i64,
    /// Sum of scores.
    pub sum: i64,
    /// Count per score, index = score.
    pub distribution: Vec<i64>,
}

impl ScoreCounts {
    /// Answers whose score is in `range`.
    pub fn count_in(&self, range: std::ops::RangeInclusive<usize>) -> i64 {
        self.distribution
            .iter()
            .enumerate()
            .filter(|(score, _)| range.contains(score))
            .map(|(_, n)| n)
            .sum()
    }

    /// Mean score; None without answers.
    pub fn mean(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.sum as f64 / self.answered as f64)
    }
}

/// NPS of a set: %promoters (9–10) − %detractors (0–6), None when nobody answered.
pub fn nps(counts: &ScoreCounts) -> Option<f64> {
    (counts.answered > 0).then(|| {
        let promoters = counts.count_in(9..=10) as f64;
        let detractors = counts.count_in(0..=6) as f64;
        100.0 * (promoters - detractors) / counts.answered as f64
    })
}

/// CSAT of a set: % of answers 4–5, None when nobody answered.
pub fn csat_percent(counts: &ScoreCounts) -> Option<f64> {
    (counts.answered > 0).then(|| 100.0 * counts.count_in(4..=5) as f64 / counts.answered as f64)
}

/// The key of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    /// A time bucket: its first local day and its UTC bounds.
    Period {
        /// First local day.
        start_date: NaiveDate,
        /// Inclusive UTC start.
        start: DateTime<Utc>,
        /// Exclusive UTC end.
        end: DateTime<Utc>,
        /// Human label, e.g. `2026-W01`.
        label: String,
    },
    /// A channel.
    Channel(String),
    /// A survey.
    Survey(Uuid),
}

/// Metrics of one group (or the total, without key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCounts {
    /// Key; None for the total.
    pub key: Option<GroupKey>,
    /// Responses.
    pub responses: i64,
    /// NPS question.
    pub nps: ScoreCounts,
    /// CSAT question.
    pub csat: ScoreCounts,
    /// CES question.
    pub ces: ScoreCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(distribution: Vec<i64>) -> ScoreCounts {
        let answered = distribution.iter().sum();
        let sum = distribution
            .iter()
            .enumerate()
            .map(|(s, n)| s as i64 * n)
            .sum();
        ScoreCounts {
            answered,
            omitted: 0,
            sum,
            distribution,
        }
    }

    #[test]
    fn nps_is_promoters_minus_detractors() {
        // 5 detractors (score 3), 5 passives (7), 10 promoters (10).
        let mut d = vec![0; 11];
        d[3] = 5;
        d[7] = 5;
        d[10] = 10;
        assert_eq!(nps(&counts(d)), Some(25.0));
        assert_eq!(nps(&counts(vec![0; 11])), None);
    }

    #[test]
    fn csat_is_the_share_of_four_and_five() {
        let d = vec![0, 1, 1, 0, 1, 1];
        assert_eq!(csat_percent(&counts(d)), Some(50.0));
        assert_eq!(csat_percent(&counts(vec![0; 6])), None);
    }
}
