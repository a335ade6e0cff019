//! GetSurveyMetrics: checks the surveys and the time zone, then lets Postgres count.

use super::Context;
use crate::domain::metrics::{GroupCounts, MetricsQuery};
use crate::error::Error;
use crate::store::metrics as rows;

/// Most groups one call may return.
pub const MAX_GROUPS: usize = 10_000;

/// The total first, then the groups in key order.
pub async fn compute(ctx: &Context, q: &MetricsQuery) -> Result<Vec<GroupCounts>, Error> {
    if !rows::time_zone_exists(&ctx.store.pool, &q.time_zone).await? {
        return Err(Error::invalid("time_zone", "not an IANA time zone name"));
    }
    let mut tx = ctx.store.pool.begin().await?;
    if let Some(missing) = rows::missing_survey(&mut tx, &q.survey_ids).await? {
        return Err(Error::not_found("survey", missing));
    }
    let groups = rows::compute(&mut tx, q).await?;
    if groups.len() > MAX_GROUPS + 1 {
        return Err(Error::invalid(
            "group_by",
            format!(
                "the grouping produces more than {MAX_GROUPS} groups; narrow submit_time_range"
            ),
        ));
    }
    tx.commit().await?;
    Ok(groups)
}
