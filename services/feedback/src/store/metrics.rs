//! Metrics in SQL: NPS / CSAT / CES counts aggregated by Postgres from the rollup
//! `response_rollup` (15-minute buckets, kept in each response's transaction), plus raw
//! responses at the edges of a range that does not fall on a bucket boundary, in one
//! statement with GROUPING SETS for the total and the groups. Only counts come back; the
//! ratios are computed in `domain::metrics`. A `segment_id` filter cannot use the rollup
//! (it has no segment dimension): then every matching response is read, through the GIN index
//! on `responses.segment_ids`. Distributions are indexed by score (CSAT and
//! CES arrays start with a 0 for the impossible score 0).

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::metrics::{GroupCounts, GroupKey, Grouping, MetricsQuery, ScoreCounts};
use crate::error::Error;

/// Adds the stored response `response_id` to the rollup, in the caller's transaction.
pub async fn add_to_rollup(conn: &mut PgConnection, response_id: Uuid) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO response_rollup AS r (survey_id, bucket, channel, touchpoint_kind, responses, nps0, nps1, nps2, nps3, nps4, nps5, nps6, nps7, nps8, nps9, nps10, nps_omitted, csat1, csat2, csat3, csat4, csat5, csat_omitted, ces1, ces2, ces3, ces4, ces5, ces6, ces7, ces_omitted) \
         SELECT survey_id, date_bin('15 minutes', submit_time, timestamptz '2000-01-01 00:00:00+00'), channel, touchpoint_kind, \
         1, COALESCE(nps_score = 0, false)::int, COALESCE(nps_score = 1, false)::int, COALESCE(nps_score = 2, false)::int, COALESCE(nps_score = 3, false)::int, COALESCE(nps_score = 4, false)::int, COALESCE(nps_score = 5, false)::int, COALESCE(nps_score = 6, false)::int, COALESCE(nps_score = 7, false)::int, COALESCE(nps_score = 8, false)::int, COALESCE(nps_score = 9, false)::int, COALESCE(nps_score = 10, false)::int, nps_omitted::int, COALESCE(csat_score = 1, false)::int, COALESCE(csat_score = 2, false)::int, COALESCE(csat_score = 3, false)::int, COALESCE(csat_score = 4, false)::int, COALESCE(csat_score = 5, false)::int, csat_omitted::int, COALESCE(ces_score = 1, false)::int, COALESCE(ces_score = 2, false)::int, COALESCE(ces_score = 3, false)::int, COALESCE(ces_score = 4, false)::int, COALESCE(ces_score = 5, false)::int, COALESCE(ces_score = 6, false)::int, COALESCE(ces_score = 7, false)::int, ces_omitted::int \
         FROM responses WHERE response_id = $1 \
         ON CONFLICT (survey_id, bucket, channel, touchpoint_kind) DO UPDATE SET \
         responses = r.responses + EXCLUDED.responses, \
         nps0 = r.nps0 + EXCLUDED.nps0, \
         nps1 = r.nps1 + EXCLUDED.nps1, \
         nps2 = r.nps2 + EXCLUDED.nps2, \
         nps3 = r.nps3 + EXCLUDED.nps3, \
         nps4 = r.nps4 + EXCLUDED.nps4, \
         nps5 = r.nps5 + EXCLUDED.nps5, \
         nps6 = r.nps6 + EXCLUDED.nps6, \
         nps7 = r.nps7 + EXCLUDED.nps7, \
         nps8 = r.nps8 + EXCLUDED.nps8, \
         nps9 = r.nps9 + EXCLUDED.nps9, \
         nps10 = r.nps10 + EXCLUDED.nps10, \
         nps_omitted = r.nps_omitted + EXCLUDED.nps_omitted, \
         csat1 = r.csat1 + EXCLUDED.csat1, \
         csat2 = r.csat2 + EXCLUDED.csat2, \
         csat3 = r.csat3 + EXCLUDED.csat3, \
         csat4 = r.csat4 + EXCLUDED.csat4, \
         csat5 = r.csat5 + EXCLUDED.csat5, \
         csat_omitted = r.csat_omitted + EXCLUDED.csat_omitted, \
         ces1 = r.ces1 + EXCLUDED.ces1, \
         ces2 = r.ces2 + EXCLUDED.ces2, \
         ces3 = r.ces3 + EXCLUDED.ces3, \
         ces4 = r.ces4 + EXCLUDED.ces4, \
         ces5 = r.ces5 + EXCLUDED.ces5, \
         ces6 = r.ces6 + EXCLUDED.ces6, \
         ces7 = r.ces7 + EXCLUDED.ces7, \
         ces_omitted = r.ces_omitted + EXCLUDED.ces_omitted",
    )
    .bind(response_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether Postgres knows the IANA time zone `name`. Asked by using it (a scan of
/// `pg_timezone_names` costs ~40 ms); an unknown zone is SQLSTATE 22023.
pub async fn time_zone_exists(pool: &sqlx::PgPool, name: &str) -> Result<bool, Error> {
    match sqlx::query("SELECT now() AT TIME ZONE $1")
        .bind(name)
        .execute(&mut *custops_common::db::read(pool).await?)
        .await
    {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22023") => Ok(false),
        Err(e) => Err(e.into()),
    }
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
        "WITH bounds AS ( \
           SELECT date_bin('15 minutes', $2::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS lo_floor, \
                  date_bin('15 minutes', $3::timestamptz, timestamptz '2000-01-01 00:00:00+00') AS hi_floor), \
         edges AS ( \
           SELECT CASE WHEN lo_floor = $2 THEN lo_floor ELSE lo_floor + interval '15 minutes' END AS lo, \
                  hi_floor AS hi FROM bounds), \
         scored AS ( \
           SELECT bucket AS at, survey_id, channel, responses, nps0, nps1, nps2, nps3, nps4, nps5, nps6, nps7, nps8, nps9, nps10, nps_omitted, csat1, csat2, csat3, csat4, csat5, csat_omitted, ces1, ces2, ces3, ces4, ces5, ces6, ces7, ces_omitted \
           FROM response_rollup, edges \
           WHERE $8 = '' \
             AND (cardinality($1::uuid[]) = 0 OR survey_id = ANY($1)) \
             AND ($2::timestamptz IS NULL OR bucket >= edges.lo) \
             AND ($3::timestamptz IS NULL OR bucket < edges.hi) \
             AND (cardinality($4::text[]) = 0 OR channel = ANY($4)) \
             AND (cardinality($5::text[]) = 0 OR touchpoint_kind = ANY($5)) \
           UNION ALL \
           SELECT submit_time AS at, survey_id, channel, 1, COALESCE(nps_score = 0, false)::int, COALESCE(nps_score = 1, false)::int, COALESCE(nps_score = 2, false)::int, COALESCE(nps_score = 3, false)::int, COALESCE(nps_score = 4, false)::int, COALESCE(nps_score = 5, false)::int, COALESCE(nps_score = 6, false)::int, COALESCE(nps_score = 7, false)::int, COALESCE(nps_score = 8, false)::int, COALESCE(nps_score = 9, false)::int, COALESCE(nps_score = 10, false)::int, nps_omitted::int, COALESCE(csat_score = 1, false)::int, COALESCE(csat_score = 2, false)::int, COALESCE(csat_score = 3, false)::int, COALESCE(csat_score = 4, false)::int, COALESCE(csat_score = 5, false)::int, csat_omitted::int, COALESCE(ces_score = 1, false)::int, COALESCE(ces_score = 2, false)::int, COALESCE(ces_score = 3, false)::int, COALESCE(ces_score = 4, false)::int, COALESCE(ces_score = 5, false)::int, COALESCE(ces_score = 6, false)::int, COALESCE(ces_score = 7, false)::int, ces_omitted::int \
           FROM responses, edges \
           WHERE (cardinality($1::uuid[]) = 0 OR survey_id = ANY($1)) \
             AND ($2::timestamptz IS NULL OR submit_time >= $2) \
             AND ($3::timestamptz IS NULL OR submit_time < $3) \
             AND CASE WHEN $8 <> '' THEN segment_ids @> ARRAY[$8::text] \
                      ELSE ($2::timestamptz IS NOT NULL AND submit_time < edges.lo) \
                           OR ($3::timestamptz IS NOT NULL AND submit_time >= edges.hi) END \
             AND (cardinality($4::text[]) = 0 OR channel = ANY($4)) \
             AND (cardinality($5::text[]) = 0 OR touchpoint_kind = ANY($5))), \
         base AS ( \
           SELECT CASE $6 WHEN 'day' THEN date_trunc('day', at AT TIME ZONE $7) \
                          WHEN 'week' THEN date_trunc('week', at AT TIME ZONE $7) \
                          WHEN 'month' THEN date_trunc('month', at AT TIME ZONE $7) END AS bucket, \
                  CASE $6 WHEN 'channel' THEN channel WHEN 'survey' THEN survey_id::text END AS label, \
                  responses, nps0, nps1, nps2, nps3, nps4, nps5, nps6, nps7, nps8, nps9, nps10, nps_omitted, csat1, csat2, csat3, csat4, csat5, csat_omitted, ces1, ces2, ces3, ces4, ces5, ces6, ces7, ces_omitted \
           FROM scored) \
         SELECT GROUPING(bucket, label) AS level, bucket, label, \
           (bucket AT TIME ZONE $7) AS bucket_start, \
           ((bucket + CASE $6 WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days' \
                              ELSE interval '1 month' END) AT TIME ZONE $7) AS bucket_end, \
           to_char(bucket, CASE $6 WHEN 'day' THEN 'YYYY-MM-DD' WHEN 'week' THEN 'IYYY-\"W\"IW' \
                                   ELSE 'YYYY-MM' END) AS bucket_label, \
           COALESCE(sum(responses), 0)::bigint AS responses, \
           COALESCE(sum(nps_omitted), 0)::bigint AS nps_omitted, \
           COALESCE(sum(csat_omitted), 0)::bigint AS csat_omitted, \
           COALESCE(sum(ces_omitted), 0)::bigint AS ces_omitted, \
           ARRAY[COALESCE(sum(nps0), 0)::bigint, COALESCE(sum(nps1), 0)::bigint, COALESCE(sum(nps2), 0)::bigint, COALESCE(sum(nps3), 0)::bigint, COALESCE(sum(nps4), 0)::bigint, COALESCE(sum(nps5), 0)::bigint, COALESCE(sum(nps6), 0)::bigint, COALESCE(sum(nps7), 0)::bigint, COALESCE(sum(nps8), 0)::bigint, COALESCE(sum(nps9), 0)::bigint, COALESCE(sum(nps10), 0)::bigint] AS nps_dist, \
           ARRAY[0::bigint, COALESCE(sum(csat1), 0)::bigint, COALESCE(sum(csat2), 0)::bigint, COALESCE(sum(csat3), 0)::bigint, COALESCE(sum(csat4), 0)::bigint, COALESCE(sum(csat5), 0)::bigint] AS csat_dist, \
           ARRAY[0::bigint, COALESCE(sum(ces1), 0)::bigint, COALESCE(sum(ces2), 0)::bigint, COALESCE(sum(ces3), 0)::bigint, COALESCE(sum(ces4), 0)::bigint, COALESCE(sum(ces5), 0)::bigint, COALESCE(sum(ces6), 0)::bigint, COALESCE(sum(ces7), 0)::bigint] AS ces_dist \
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
    .bind(&q.segment_id)
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
            let distribution: Vec<i64> = row.try_get(format!("{prefix}_dist").as_str())?;
            Ok(ScoreCounts {
                answered: distribution.iter().sum(),
                omitted: row.try_get(format!("{prefix}_omitted").as_str())?,
                sum: distribution
                    .iter()
                    .zip(0_i64..)
                    .map(|(count, score)| count * score)
                    .sum(),
                distribution,
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
