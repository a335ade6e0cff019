//! The membership reads: the hot-path lookups (through the caches of `state.lookups`), the
//! members of a segment page by page, and ExplainMembership's stored membership beside the
//! rule evaluated now. An unknown customer has no segments; a missing segment is NOT_FOUND.

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::eval::{self, Explanation};
use crate::error::{Error, Result};
use crate::lookups::SegmentSet;
use crate::state::AppState;
use crate::store::memberships::{self, SegmentMembership};
use crate::store::{catalog, facts, segments};
use crate::wire::rules::parse_rule;

/// A customer's memberships with their segments' names, kinds and enter times, read from
/// Postgres in one query (so ids and details agree).
pub async fn customer_memberships(
    state: &AppState,
    customer_id: &str,
) -> Result<Vec<SegmentMembership>> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    Ok(memberships::customer_segment_memberships(&mut *conn, customer_id).await?)
}

/// The segments `customer_id` is a member of, from the caches.
pub async fn customer_segments(state: &AppState, customer_id: &str) -> Result<SegmentSet> {
    Ok(state
        .lookups
        .customer_segments(&state.pool, customer_id)
        .await?)
}

/// Whether `customer_id` is a member of `segment_id`, which must exist.
pub async fn is_member(state: &AppState, segment_id: Uuid, customer_id: &str) -> Result<bool> {
    segment_size(state, segment_id).await?;
    Ok(customer_segments(state, customer_id)
        .await?
        .contains(&segment_id))
}

/// Whether each of `customer_ids` is a member of `segment_id`, which must exist.
pub async fn members_among(
    state: &AppState,
    segment_id: Uuid,
    customer_ids: &[String],
) -> Result<Vec<bool>> {
    segment_size(state, segment_id).await?;
    Ok(state
        .lookups
        .members_among(&state.pool, segment_id, customer_ids)
        .await?)
}

/// How many members `segment_id` has, from the caches.
pub async fn segment_size(state: &AppState, segment_id: Uuid) -> Result<i64> {
    state
        .lookups
        .segment_size(&state.pool, segment_id)
        .await?
        .ok_or_else(|| Error::not_found("segment", segment_id))
}

/// NOT_FOUND unless `segment_id` exists (read from Postgres).
pub async fn require_segment(pool: &PgPool, segment_id: Uuid) -> Result<()> {
    match segments::get(&mut *custops_common::db::read(pool).await?, segment_id).await? {
        Some(_) => Ok(()),
        None => Err(Error::not_found("segment", segment_id)),
    }
}

/// Up to `limit` members of `segment_id` after the customer id `after`, ascending; NOT_FOUND
/// once the segment is gone (a stream checks before every page).
pub async fn members_page(
    pool: &PgPool,
    segment_id: Uuid,
    after: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let mut conn = custops_common::db::read(pool).await?;
    if segments::get(&mut *conn, segment_id).await?.is_none() {
        return Err(Error::not_found("segment", segment_id));
    }
    Ok(memberships::members_page(&mut *conn, segment_id, after, limit).await?)
}

/// A customer's stored membership of a segment beside the segment's rule evaluated now.
#[derive(Debug, Clone)]
pub struct Explained {
    /// Whether the stored membership exists.
    pub member: bool,
    /// The rule evaluated at `evaluate_time` (the stored membership for a static segment).
    pub rule_result: bool,
    pub segment_version: i64,
    pub evaluate_time: DateTime<Utc>,
    /// When and why the stored membership began.
    pub entered: Option<(DateTime<Utc>, ChangeReason)>,
    /// The evaluation, node by node (rule segments only).
    pub explanation: Option<Explanation>,
}

/// ExplainMembership: NOT_FOUND when the segment does not exist or segmentation holds no
/// facts for the customer.
pub async fn explain(state: &AppState, segment_id: Uuid, customer_id: &str) -> Result<Explained> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    let segment = segments::get(&mut *conn, segment_id)
        .await?
        .ok_or_else(|| Error::not_found("segment", segment_id))?;
    let mut facts = facts::load_facts(&mut conn, customer_id)
        .await?
        .ok_or_else(|| Error::not_found("customer facts", customer_id))?;
    let stored = memberships::membership(&mut *conn, segment_id, customer_id).await?;
    let now = state.clock.now();
    let member = stored.is_some();
    let (rule_result, explanation) = match segment.rule.as_deref() {
        Some(bytes) if segment.rule_kind => {
            let condition = segments::decode_rule(bytes).map_err(Error::internal)?;
            let catalog = catalog::load_catalog(&mut conn).await?;
            let rule = parse_rule(&condition, "rule", &catalog)
                .map_err(|v| Error::internal(anyhow::anyhow!("stored rule: {v:?}")))?;
            if !rule.event_types().is_empty() {
                crate::store::custom_events::load_one(&mut conn, &mut facts).await?;
            }
            let ctx = facts::eval_context(&mut conn, now).await?;
            (
                eval::evaluate(&rule, &facts, &ctx),
                Some(eval::explain(&rule, &facts, &ctx)),
            )
        }
        _ => (member, None),
    };
    Ok(Explained {
        member,
        rule_result,
        segment_version: segment.version,
        evaluate_time: now,
        entered: stored.map(|(time, reason)| (time, memberships::reason_from_slug(&reason))),
        explanation,
    })
}
