//! Applying a rule segment set-based, in the caller's transaction: a recompute or rollover of
//! the segment for everyone, and the segments that reference a changed segment following it
//! for the customers who moved (so no reader sees a segment changed and a dependant not yet).
//! The rule compiled to SQL selects the new members at T into a temporary table, set-based
//! `DELETE … RETURNING` / `INSERT … SELECT … RETURNING` apply the difference
//! (`store::recompute`), the SegmentExited / SegmentEntered events are written from it by one
//! `INSERT … SELECT` each, payloads encoded in SQL (`events::append_entered_from`), and the
//! lookup caches are notified. Used by the recompute worker and the rollover pass (`jobs`) and
//! by static uploads (`workflow::segments`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{self, ChangeCause};
use crate::store::recompute::{self as staged, Candidates};
use crate::store::{self, memberships, segments};
use crate::wire::rules::parse_rule;

/// Above this many changed customers a recompute moves the cache epoch instead of notifying
/// each customer.
const NOTIFY_EACH_MAX: usize = 1_000;

/// What applying one segment's rule changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentOutcome {
    pub customers_evaluated: i64,
    pub entered: i64,
    pub exited: i64,
    pub member_count: i64,
}

/// Re-applies a rule segment (the caller holds `memberships::lock_for_recompute`, then the
/// segment row) at `now` to every customer with facts, set-based, in the caller's transaction:
/// memberships, events, member count, membership version, cache notifications. Then every
/// segment that references it, directly or through others, follows for the customers whose
/// membership moved (see [`follow_dependants`]), in the same transaction: no reader ever sees
/// the segment changed and a dependant not yet. The outcome is the segment's own, with
/// `customers_evaluated` 0: the caller counts the customers once for many segments.
pub async fn apply_segment(
    tx: &mut PgConnection,
    segment: &segments::SegmentRecord,
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    let dependants = segments::dependants(&mut *tx, segment.segment_id).await?;
    let want_moved = !dependants.is_empty();
    let (outcome, moved) =
        apply_rule(tx, segment, now, cause, Candidates::Everyone, want_moved).await?;
    apply_dependants(tx, &dependants, &moved, now, cause).await?;
    Ok(outcome)
}

/// After the memberships of `root` moved for the customers `moved` (a recompute, a rollover,
/// a static upload; the caller holds `memberships::lock_for_recompute`): re-evaluates every
/// rule segment that references `root`, transitively, in dependency order, for those
/// customers only, set-based and in the caller's transaction, with the same cause. Restricting
/// to `moved` is exact: a dependant reads the facts (unchanged here) and the memberships of the
/// segments it references, which changed for nobody else. Returns what changed in dependants.
pub async fn follow_dependants(
    tx: &mut PgConnection,
    root: Uuid,
    moved: &[String],
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    if moved.is_empty() {
        return Ok(SegmentOutcome::default());
    }
    let dependants = segments::dependants(&mut *tx, root).await?;
    apply_dependants(tx, &dependants, moved, now, cause).await
}

/// [`follow_dependants`] with the dependants, in dependency order, already read.
async fn apply_dependants(
    tx: &mut PgConnection,
    dependants: &[Uuid],
    moved: &[String],
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    let mut total = SegmentOutcome::default();
    if moved.is_empty() || dependants.is_empty() {
        return Ok(total);
    }
    staged::stage_moved(&mut *tx, moved).await?;
    for &segment_id in dependants {
        let Some(segment) = segments::get_for_update(&mut *tx, segment_id).await? else {
            continue;
        };
        if !segment.rule_kind {
            continue;
        }
        let (outcome, _) = apply_rule(tx, &segment, now, cause, Candidates::Moved, false).await?;
        total.customers_evaluated += outcome.customers_evaluated;
        total.entered += outcome.entered;
        total.exited += outcome.exited;
    }
    Ok(total)
}

/// Applies `segment`'s rule to `candidates` at `now`: the compiled SQL into a temporary table,
/// set-based `DELETE … RETURNING` / `INSERT … SELECT … RETURNING` into two more, the events
/// written from those inside Postgres (one `INSERT … SELECT` each for exits and entries), the
/// member count, cache notifications. Returns the outcome and the customers whose membership
/// moved — read back only when `want_moved` or when few enough to notify one by one, empty
/// otherwise.
async fn apply_rule(
    tx: &mut PgConnection,
    segment: &segments::SegmentRecord,
    now: DateTime<Utc>,
    cause: &ChangeCause,
    candidates: Candidates,
    want_moved: bool,
) -> anyhow::Result<(SegmentOutcome, Vec<String>)> {
    let bytes = segment
        .rule
        .as_deref()
        .context("rule segment without a rule")?;
    let condition = segments::decode_rule(bytes).context("Failed to decode a stored rule")?;
    let catalog = store::catalog::load_catalog(&mut *tx).await?;
    let rule = parse_rule(&condition, "segment.rule", &catalog)
        .map_err(|v| anyhow::anyhow!("stored rule does not parse: {v:?}"))?;
    let ctx = store::facts::eval_context(&mut *tx, now).await?;
    let (compiled, from, only_moved) = candidates.compile(&rule);

    staged::create_tables(&mut *tx).await?;
    let customers_evaluated: i64 = match candidates {
        Candidates::Everyone => 0,
        Candidates::Moved => staged::count_candidates(&mut *tx, &from).await?,
    };
    let select = format!("SELECT f.customer_id FROM {from} WHERE {}", compiled.sql);
    // A segment without members (just created, or emptied) has nothing to compare with:
    // its members go straight from the rule into `memberships`, without staging them.
    let empty = matches!(candidates, Candidates::Everyone)
        && !staged::has_members(&mut *tx, segment.segment_id).await?;
    let enter = (segment, now, memberships::reason_slug(cause.reason));
    let (matched, exited, entered) = if empty {
        let entered =
            staged::insert_matching(&mut *tx, &compiled, &select, ctx.today, enter).await?;
        (entered, 0, entered)
    } else {
        let matched = staged::stage_matching(&mut *tx, &compiled, &select, now, ctx.today).await?;
        let (exited, entered) = staged::apply_difference(&mut *tx, only_moved, enter).await?;
        (matched, exited, entered)
    };

    events::append_exited_from(
        &mut *tx,
        "recompute_exited",
        segment.segment_id,
        segment.version,
        now,
        cause,
    )
    .await?;
    events::append_entered_from(
        &mut *tx,
        "recompute_entered",
        segment.segment_id,
        segment.version,
        now,
        cause,
    )
    .await?;

    let entered_count = i64::try_from(entered)?;
    let exited_count = i64::try_from(exited)?;
    let changed_count = usize::try_from(entered + exited)?;
    // Who moved is read back only when someone needs the list: the cache notifications of a
    // few customers, or the segments that reference this one.
    let changed: Vec<String> =
        if changed_count > 0 && (changed_count <= NOTIFY_EACH_MAX || want_moved) {
            staged::moved(&mut *tx).await?
        } else {
            Vec::new()
        };
    let member_count = match candidates {
        // A recompute applied the current version to everyone: the members are those matched.
        Candidates::Everyone => {
            staged::set_member_count(&mut *tx, segment, i64::try_from(matched)?).await?
        }
        // A few customers: move the count, as incremental changes do.
        Candidates::Moved => {
            staged::shift_member_count(&mut *tx, segment.segment_id, entered_count - exited_count)
                .await?
        }
    };

    if changed_count > 0 || matches!(candidates, Candidates::Everyone) {
        // Sizes first: once a lookup shows a customer's new segments, sizes already agree.
        memberships::notify_segments(&mut *tx, &[segment.segment_id]).await?;
    }
    if changed_count > NOTIFY_EACH_MAX {
        memberships::bump_epoch(&mut *tx).await?;
    } else {
        memberships::notify_customers(&mut *tx, &changed).await?;
    }
    Ok((
        SegmentOutcome {
            customers_evaluated,
            entered: entered_count,
            exited: exited_count,
            member_count,
        },
        changed,
    ))
}
