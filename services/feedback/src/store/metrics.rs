//! Metrics in SQL: NPS / CSAT / CES counts aggregated by Postgres over the covering indexes
//! `responses_metrics_by_time` and `responses_metrics_by_survey` (see the migration), in one
//! statement with GROUPING SETS for the total and the groups. Only counts come back; the
//! ratios are computed in `domain::metrics`. Distributions are indexed by score (CSAT and
//! CES arrays start with a 0 for the impossible score 0).

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::metrics::{GroupCounts, GroupKey, Grouping, MetricsQuery, ScoreCounts};
use crate::error::Error;

/// Whether Postgres knows the IANA time zone `name`.
pub async fn time_zone_exists(conn: &mut PgConnection, name: &str) -> Result<bool, Error> {
    let exists =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(name)
            .fetch_one(conn)
            .await?;
    Ok(exists)
}

/// The first of `ids` that is not a survey.
pub async fn missing_survey(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Option<Uuid>, Error> {
    let found: Vec<Uuid> =
        sqlx::query_scalar("SELECT survey_id FROM surveys WHERE survey_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(ids.iter().find(|id| !found.contains(id)).copied())
}

fn grouping_name(g: Grouping) -> &'static str {
    match g {
        Grouping::None => "none",
        Grouping::Day => "day",
        Grouping::Week => "week",
        Grouping::Month => "month",
        Grouping::Channel => "channel",
        Grouping::Survey => "survey",
    }
}

/// The total (first) and the non-empty groups in ascending key order.
pub async fn compute(conn: &mut PgConnection, q: &MetricsQuery) -> Result<Vec<GroupCounts>, Error> {
    let kinds: Vec<&str> = q.touchpoint_kinds.iter().map(|k| k.as_str()).collect();
    let rows = sqlx::query(
        "WITH base AS ( \
           SELECT CASE $6 WHEN 'day' THEN date_trunc('day', submit_time AT TIME ZONE $7) \
                          WHEN 'week' THEN date_trunc('week', submit_time AT TIME ZONE $7) \
                          WHEN 'month' THEN date_trunc('month', submit_time AT TIME ZONE $7) \
                  END AS bucket, \
                  CASE $6 WHEN 'channel' THEN channel WHEN 'survey' THEN survey_id::text END AS label, \
                  nps_score, nps_omitted, csat_score, csat_omitted, ces_score, ces_omitted \
           FROM responses \
           WHERE (cardinality($1::uuid[]) = 0 OR survey_id = ANY($1)) \
             AND ($2::timestamptz IS NULL OR submit_time >= $2) \
             AND ($3::timestamptz IS NULL OR submit_time < $3) \
             AND (cardinality($4::text[]) = 0 OR channel = ANY($4)) \
             AND (cardinality($5::text[]) = 0 OR touchpoint_kind = ANY($5))) \
         SELECT GROUPING(bucket, label) AS level, bucket, label, \
           (bucket AT TIME ZONE $7) AS bucket_start, \
           ((bucket + CASE $6 WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days' \
                             ELSE interval '1 month' END) AT TIME ZONE $7) AS bucket_end, \
           to_char(bucket, CASE $6 WHEN 'day' THEN 'YYYY-MM-DD' WHEN 'week' THEN 'IYYY-\"W\"IW' \
                                   ELSE 'YYYY-MM' END) AS bucket_label, \
           count(*) AS responses, \
           count(nps_score) AS nps_answered, count(*) FILTER (WHERE nps_omitted) AS nps_omitted, \
           COALESCE(sum(nps_score), 0)::bigint AS nps_sum, \
           ARRAY[count(*) FILTER (WHERE nps_score = 0), count(*) FILTER (WHERE nps_score = 1), \
           count(*) FILTER (WHERE nps_score = 2), count(*) FILTER (WHERE nps_score = 3), \
           count(*) FILTER (WHERE nps_score = 4), count(*) FILTER (WHERE nps_score = 5), \
           count(*) FILTER (WHERE nps_score = 6), count(*) FILTER (WHERE nps_score = 7), \
           count(*) FILTER (WHERE nps_score = 8), count(*) FILTER (WHERE nps_score = 9), \
           count(*) FILTER (WHERE nps_score = 10)] AS nps_dist, \
           count(csat_score) AS csat_answered, count(*) FILTER (WHERE csat_omitted) AS csat_omitted, \
           COALESCE(sum(csat_score), 0)::bigint AS csat_sum, \
           ARRAY[0::bigint, count(*) FILTER (WHERE csat_score = 1), count(*) FILTER (WHERE csat_score = 2), \
           count(*) FILTER (WHERE csat_score = 3), count(*) FILTER (WHERE csat_score = 4), \
           count(*) FILTER (WHERE csat_score = 5)] AS csat_dist, \
           count(ces_score) AS ces_answered, count(*) FILTER (WHERE ces_omitted) AS ces_omitted, \
           COALESCE(sum(ces_score), 0)::bigint AS ces_sum, \
           ARRAY[0::bigint, count(*) FILTER (WHERE ces_score = 1), count(*) FILTER (WHERE ces_score = 2), \
           count(*) FILTER (WHERE ces_score = 3), count(*) FILTER (WHERE ces_score = 4), \
           count(*) FILTER (WHERE ces_score = 5), count(*) FILTER (WHERE ces_score = 6), \
           count(*) FILTER (WHERE ces_score = 7)] AS ces_dist \
         FROM base GROUP BY GROUPING SETS ((), (bucket, label)) \
         ORDER BY level DESC, bucket, label",
    )
    .bind(&q.survey_ids)
    .bind(q.start)
    .bind(q.end)
    .bind(&q.channels)
    .bind(&kinds)
    .bind(grouping_name(q.grouping))
    .bind(&q.time_zone)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let level: i32 = row.try_get("level")?;
        let key = if level != 0 {
            None
        } else {
            match q.grouping {
                // Without grouping the second set is one group with no key: not reported.
                Grouping::None => continue,
                Grouping::Day | Grouping::Week | Grouping::Month => {
                    let bucket: Option<NaiveDateTime> = row.try_get("bucket")?;
                    let start: Option<DateTime<Utc>> = row.try_get("bucket_start")?;
                    let end: Option<DateTime<Utc>> = row.try_get("bucket_end")?;
                    let label: Option<String> = row.try_get("bucket_label")?;
                    match (bucket, start, end) {
                        (Some(bucket), Some(start), Some(end)) => Some(GroupKey::Period {
                            start_date: bucket.date(),
                            start,
                            end,
                            label: label.unwrap_or_default(),
                        }),
                        _ => continue,
                    }
                }
                Grouping::Channel => Some(GroupKey::Channel(
                    row.try_get::<Option<String>, _>("label")?
                        .unwrap_or_default(),
                )),
                Grouping::Survey => {
                    let label: Option<String> = row.try_get("label")?;
                    let id = label
                        .as_deref()
                        .and_then(|l| Uuid::parse_str(l).ok())
                        .unwrap_or_default();
                    Some(GroupKey::Survey(id))
                }
            }
        };
        let counts = |prefix: &str| -> Result<ScoreCounts, Error> {
            Ok(ScoreCounts {
                answered: row.try_get(format!("{prefix}_answered").as_str())?,
                omitted: row.try_get(format!("{prefix}_omitted").as_str())?,
                sum: row.try_get(format!("{prefix}_sum").as_str())?,
                distribution: row.try_get(format!("{prefix}_dist").as_str())?,
            })
        };
        out.push(GroupCounts {
            key,
            responses: row.try_get("responses")?,
            nps: counts("nps")?,
            csat: counts("csat")?,
            ces: counts("ces")?,
        });
    }
    Ok(out)
}
