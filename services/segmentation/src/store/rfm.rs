//! RFM in Postgres: the config row ("rfm" in `configs`, with the bounds of the last full run),
//! the quintile bounds (`percentile_disc(k/5)` over scored customers) and the scoring of
//! everyone, or of some customers, in one statement over `customer_facts` and
//! `customer_activities`.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::domain::rfm::{CurrencyRate, RfmConfig, RfmState, Thresholds, counted_currencies, grid};
use crate::store::facts::{COUNTS_AS_PURCHASE, NET_AMOUNT};
use crate::store::{Who, configs};

/// The configs row name.
pub const ROW: &str = "rfm";

/// The JSON kept in `configs.value`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Stored {
    window_days: i32,
    currency: String,
    fixed_thresholds: Option<Thresholds>,
    /// Absent in configs written before rates existed: none.
    #[serde(default)]
    currency_rates: Vec<CurrencyRate>,
    computed_thresholds: Option<Thresholds>,
    /// RFC 3339.
    compute_time: Option<String>,
    /// Absent in configs written before it existed.
    #[serde(default)]
    computed_customers: Option<i64>,
}

/// The stored config and bounds, or the defaults when never written.
pub async fn load(conn: &mut PgConnection) -> Result<RfmState, sqlx::Error> {
    let Some(row) = configs::load::<Stored>(conn, ROW).await? else {
        return Ok(RfmState {
            config: RfmConfig::default(),
            computed_thresholds: None,
            compute_time: None,
            computed_customers: None,
            update_time: None,
            etag: configs::INITIAL_ETAG.to_owned(),
        });
    };
    let stored = row.value;
    Ok(RfmState {
        config: RfmConfig {
            window_days: stored.window_days,
            currency: stored.currency,
            fixed_thresholds: stored.fixed_thresholds,
            currency_rates: stored.currency_rates,
        },
        computed_thresholds: stored.computed_thresholds,
        compute_time: stored
            .compute_time
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        computed_customers: stored.computed_customers,
        update_time: Some(row.update_time),
        etag: row.etag,
    })
}

/// Writes `state` (config and bounds); `new_etag` when the config itself changed.
pub async fn save(
    conn: &mut PgConnection,
    state: &RfmState,
    update_time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stored = Stored {
        window_days: state.config.window_days,
        currency: state.config.currency.clone(),
        fixed_thresholds: state.config.fixed_thresholds,
        currency_rates: state.config.currency_rates.clone(),
        computed_thresholds: state.computed_thresholds,
        compute_time: state.compute_time.map(|t| t.to_rfc3339()),
        computed_customers: state.computed_customers,
    };
    configs::save(conn, ROW, &stored, &state.etag, update_time).await
}

/// Raw values as of `$1` for `who` (ids in `$3`, see [`Who`]): window `$2`
/// days, counted currencies `$4` with their exact ratios `$5` (amounts) and `$6` (values), the
/// RFM currency among them at 1:1 (`domain::rfm::counted_currencies`). A customer is
/// scored when a purchase exists at or before `$1`; frequency counts every purchase in the
/// window, whatever its currency. Purchases are net of refunds: one refunded in full does not
/// count at all ([`COUNTS_AS_PURCHASE`]), the others count their [`NET_AMOUNT`]. Monetary: per
/// currency, the window's purchases are summed,
/// multiplied by value / amount in exact numeric arithmetic and rounded down (`div`); a
/// currency without a rate has no row to join and counts nothing. `domain::rfm::monetary_value`
/// states the same in Rust. The full run and the per-customer refresh both run this text.
fn values_sql(who: Who<'_>) -> String {
    let a = who.condition("a.customer_id", 3);
    let f = who.condition("f.customer_id", 3);
    let (purchase, net) = (COUNTS_AS_PURCHASE, NET_AMOUNT);
    format!(
        "\
    WITH p AS ( \
      SELECT a.customer_id, max(a.occur_time) AS last_time, \
             count(*) FILTER (WHERE a.occur_time > $1 - $2 * interval '24 hours') AS frequency \
      FROM customer_activities a \
      WHERE {purchase} AND a.occur_time <= $1 \
        AND {a} \
      GROUP BY a.customer_id), \
    c AS ( \
      SELECT a.customer_id, a.currency, sum({net})::numeric AS total \
      FROM customer_activities a \
      WHERE {purchase} AND a.occur_time <= $1 \
        AND a.occur_time > $1 - $2 * interval '24 hours' \
        AND {a} \
      GROUP BY a.customer_id, a.currency), \
    m AS ( \
      SELECT c.customer_id, sum(div(c.total * r.value, r.amount)) AS monetary \
      FROM c JOIN unnest($4::text[], $5::bigint[], $6::bigint[]) AS r (currency, amount, value) \
        ON r.currency = c.currency \
      GROUP BY c.customer_id) \
    SELECT f.customer_id, \
           p.last_time IS NOT NULL AS scored, \
           floor(extract(epoch FROM ($1 - p.last_time)) / 86400)::int AS recency_days, \
           COALESCE(p.frequency, 0)::bigint AS frequency, \
           LEAST(COALESCE(m.monetary, 0), 9223372036854775807)::bigint AS monetary \
    FROM customer_facts f \
    LEFT JOIN p ON p.customer_id = f.customer_id \
    LEFT JOIN m ON m.customer_id = f.customer_id \
    WHERE {f}"
    )
}

/// Whether any customer has a purchase.
pub async fn any_purchase(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let sql =
        format!("SELECT EXISTS (SELECT 1 FROM customer_activities a WHERE {COUNTS_AS_PURCHASE})");
    sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(conn).await
}

/// Quintile bounds over every scored customer as of `now`; `None` when nobody is scored.
pub async fn quintiles(
    conn: &mut PgConnection,
    config: &RfmConfig,
    now: DateTime<Utc>,
) -> Result<Option<Thresholds>, sqlx::Error> {
    let sql = format!(
        "WITH v AS ({}) \
         SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY recency_days) \
                  AS r, \
                percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY frequency) AS f, \
                percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY monetary) AS m \
         FROM v WHERE scored",
        values_sql(Who::Everyone)
    );
    let (currencies, amounts, values) = counted_currencies(config);
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(config.window_days)
        .bind(None::<Vec<String>>)
        .bind(currencies)
        .bind(amounts)
        .bind(values)
        .fetch_one(conn)
        .await?;
    let r: Option<Vec<i32>> = row.try_get("r")?;
    let f: Option<Vec<i64>> = row.try_get("f")?;
    let m: Option<Vec<i64>> = row.try_get("m")?;
    Ok(match (r, f, m) {
        (Some(r), Some(f), Some(m)) => Some(Thresholds {
            recency_days: to_four(&r),
            frequency: to_four(&f),
            monetary_minor: to_four(&m),
        }),
        _ => None,
    })
}

fn to_four<T: Copy + Default>(values: &[T]) -> [T; 4] {
    let mut out = [T::default(); 4];
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = *v;
    }
    out
}

/// A customer whose RFM group changed in a scoring pass, with the new values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub customer_id: String,
    /// "" when not scored before.
    pub previous_group: String,
    pub rfm: StoredRfm,
}

/// The RFM columns of one customer, as the facts carry them.
pub type StoredRfm = crate::domain::facts::RfmFacts;

/// Scores `who` as of `now` with `bounds` and stores it; returns the customers whose group changed. Without bounds nobody can be scored yet,
/// so scores stay 0 and groups "".
pub async fn score(
    conn: &mut PgConnection,
    config: &RfmConfig,
    bounds: Option<&Thresholds>,
    now: DateTime<Utc>,
    who: Who<'_>,
) -> Result<Vec<GroupChange>, sqlx::Error> {
    let cells = grid()
        .into_iter()
        .map(|(r, fm, slug)| format!("({r}, {fm}, '{slug}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let values = values_sql(who);
    // Bounds arrays are 1-based: ≤ [1] is the best recency / lowest frequency score.
    let sql = format!(
        "WITH v AS ({values}), \
         s AS ( \
           SELECT v.*, \
             CASE WHEN NOT scored OR $7::int[] IS NULL THEN 0 \
                  WHEN recency_days <= ($7::int[])[1] THEN 5 \
                  WHEN recency_days <= ($7::int[])[2] THEN 4 \
                  WHEN recency_days <= ($7::int[])[3] THEN 3 \
                  WHEN recency_days <= ($7::int[])[4] THEN 2 ELSE 1 END AS r, \
             CASE WHEN NOT scored OR $8::bigint[] IS NULL THEN 0 \
                  WHEN frequency <= ($8::bigint[])[1] THEN 1 \
                  WHEN frequency <= ($8::bigint[])[2] THEN 2 \
                  WHEN frequency <= ($8::bigint[])[3] THEN 3 \
                  WHEN frequency <= ($8::bigint[])[4] THEN 4 ELSE 5 END AS fs, \
             CASE WHEN NOT scored OR $9::bigint[] IS NULL THEN 0 \
                  WHEN monetary <= ($9::bigint[])[1] THEN 1 \
                  WHEN monetary <= ($9::bigint[])[2] THEN 2 \
                  WHEN monetary <= ($9::bigint[])[3] THEN 3 \
                  WHEN monetary <= ($9::bigint[])[4] THEN 4 ELSE 5 END AS ms \
           FROM v), \
         g AS ( \
           SELECT s.*, COALESCE(cell.grp, '') AS grp \
           FROM s LEFT JOIN (VALUES {cells}) AS cell (r, fm, grp) \
             ON cell.r = s.r AND cell.fm = (s.fs + s.ms + 1) / 2), \
         old AS ( \
           SELECT f.customer_id, f.rfm_group AS old_group \
           FROM customer_facts f JOIN g USING (customer_id)), \
         upd AS ( \
           UPDATE customer_facts f SET \
             rfm_recency_days = g.recency_days, rfm_frequency = g.frequency, \
             rfm_monetary_minor = g.monetary, rfm_recency_score = g.r, \
             rfm_frequency_score = g.fs, rfm_monetary_score = g.ms, rfm_group = g.grp, \
             rfm_score_time = $1 \
           FROM g JOIN old USING (customer_id) \
           WHERE f.customer_id = g.customer_id \
           RETURNING f.customer_id, old.old_group, f.rfm_recency_days, f.rfm_frequency, \
             f.rfm_monetary_minor, f.rfm_recency_score, f.rfm_frequency_score, \
             f.rfm_monetary_score, f.rfm_group, f.rfm_score_time) \
         SELECT * FROM upd WHERE old_group <> rfm_group"
    );
    let (currencies, amounts, values) = counted_currencies(config);
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(config.window_days)
        .bind(who.ids())
        .bind(currencies)
        .bind(amounts)
        .bind(values)
        .bind(bounds.map(|b| b.recency_days.to_vec()))
        .bind(bounds.map(|b| b.frequency.to_vec()))
        .bind(bounds.map(|b| b.monetary_minor.to_vec()))
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(GroupChange {
                customer_id: row.try_get("customer_id")?,
                previous_group: row.try_get("old_group")?,
                rfm: stored_from_row(row)?,
            })
        })
        .collect()
}

/// The RFM columns (`rfm_*`) of a row of `customer_facts`.
pub(crate) fn stored_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredRfm, sqlx::Error> {
    Ok(StoredRfm {
        recency_days: row.try_get("rfm_recency_days")?,
        frequency: row.try_get("rfm_frequency")?,
        monetary_minor: row.try_get("rfm_monetary_minor")?,
        recency_score: i32::from(row.try_get::<i16, _>("rfm_recency_score")?),
        frequency_score: i32::from(row.try_get::<i16, _>("rfm_frequency_score")?),
        monetary_score: i32::from(row.try_get::<i16, _>("rfm_monetary_score")?),
        group: row.try_get("rfm_group")?,
        score_time: row.try_get("rfm_score_time")?,
    })
}

/// One customer's stored RFM, or `None` when unknown.
pub async fn get(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<StoredRfm>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT rfm_recency_days, rfm_frequency, rfm_monetary_minor, rfm_recency_score, \
           rfm_frequency_score, rfm_monetary_score, rfm_group, rfm_score_time \
         FROM customer_facts WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(stored_from_row).transpose()
}

/// Customers per (R, FM) cell and unscored, optionally only members of `segment`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distribution {
    /// `(R, FM, count)` for non-empty cells.
    pub cells: Vec<(i32, i32, i64)>,
    pub unscored: i64,
}

/// Counts customers per cell, over everyone or the members of `segment`.
pub async fn distribution(
    conn: &mut PgConnection,
    segment: Option<uuid::Uuid>,
) -> Result<Distribution, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.rfm_recency_score::int AS r, \
                ((f.rfm_frequency_score + f.rfm_monetary_score + 1) / 2)::int AS fm, \
                count(*) AS n \
         FROM customer_facts f \
         WHERE $1::uuid IS NULL OR EXISTS (SELECT 1 FROM memberships m \
           WHERE m.segment_id = $1 AND m.customer_id = f.customer_id) \
         GROUP BY 1, 2",
    )
    .bind(segment)
    .fetch_all(conn)
    .await?;
    let mut out = Distribution::default();
    for row in rows {
        let (r, fm, n): (i32, i32, i64) =
            (row.try_get("r")?, row.try_get("fm")?, row.try_get("n")?);
        if r == 0 {
            out.unscored += n;
        } else {
            out.cells.push((r, fm, n));
        }
    }
    Ok(out)
}
