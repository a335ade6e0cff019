//! Keeping memberships current: re-evaluating one customer after their facts changed,
//! removing an erased customer, moving memberships on a merge. Each writes memberships,
//! member counts and SegmentEntered / SegmentExited events in the caller's transaction, and
//! notifies the lookup caches, which Postgres delivers only if that transaction commits
//! (see `lookups`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::eval;
use crate::events::{self, ChangeCause};
use crate::store::{self, memberships, segments};

/// Why memberships are being changed, carried onto the events.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: ChangeReason,
    /// For `ChangeReason::Event`: the upstream event's id.
    pub event_id: String,
    /// The evaluation time.
    pub now: DateTime<Utc>,
}

impl Cause {
    fn change(&self) -> ChangeCause {
        ChangeCause {
            reason: self.reason,
            event_id: if self.reason == ChangeReason::Event {
                self.event_id.clone()
            } else {
                String::new()
            },
            recompute_job_id: None,
        }
    }
}

/// One membership to begin or end.
#[derive(Debug)]
enum Change {
    Enter { segment_version: i64 },
    Exit { segment_version: i64 },
}

/// Re-evaluates every rule segment for `customer_id` after their facts changed, in
/// dependency order (a segment referencing another sees its new membership). A customer
/// without facts leaves every rule segment.
pub async fn reevaluate_customer(
    tx: &mut PgConnection,
    customer_id: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    memberships::lock_for_incremental(tx).await?;
    let current = memberships::customer_memberships(tx, customer_id).await?;
    let facts = store::facts::load_facts(tx, customer_id).await?;
    let mut changes: BTreeMap<Uuid, Change> = BTreeMap::new();
    match facts {
        None => {
            for m in current.iter().filter(|m| m.rule) {
                changes.insert(
                    m.segment_id,
                    Change::Exit {
                        segment_version: m.segment_version,
                    },
                );
            }
        }
        Some(mut facts) => {
            facts.segments = current.iter().map(|m| m.segment_id).collect();
            let ctx = store::facts::eval_context(tx, cause.now).await?;
            for segment in segments::rule_segments(tx).await? {
                let was = facts.segments.contains(&segment.segment_id);
                let is = eval::evaluate(&segment.rule, &facts, &ctx);
                if is && !was {
                    facts.segments.insert(segment.segment_id);
                    changes.insert(
                        segment.segment_id,
                        Change::Enter {
                            segment_version: segment.version,
                        },
                    );
                } else if was && !is {
                    facts.segments.remove(&segment.segment_id);
                    changes.insert(
                        segment.segment_id,
                        Change::Exit {
                            segment_version: segment.version,
                        },
                    );
                }
            }
        }
    }
    apply(tx, customer_id, changes, cause).await
}

/// Ends every membership of an erased customer, static ones included (reason ERASURE).
pub async fn remove_customer(
    tx: &mut PgConnection,
    customer_id: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    memberships::lock_for_incremental(tx).await?;
    let current = memberships::customer_memberships(tx, customer_id).await?;
    let changes = current
        .into_iter()
        .map(|m| {
            (
                m.segment_id,
                Change::Exit {
                    segment_version: m.segment_version,
                },
            )
        })
        .collect();
    let cause = Cause {
        reason: ChangeReason::Erasure,
        ..cause.clone()
    };
    apply(tx, customer_id, changes, &cause).await
}

/// After `source` was merged into `target` by merge `merge_id` (facts already moved, the merge
/// recorded): `source` leaves every segment, its static memberships pass to `target`, what
/// passed is recorded for the unmerge, `target` is re-evaluated (reason MERGE).
pub async fn merge_customers(
    tx: &mut PgConnection,
    merge_id: &str,
    source: &str,
    target: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    let cause = Cause {
        reason: ChangeReason::Merge,
        ..cause.clone()
    };
    memberships::lock_for_incremental(tx).await?;
    let source_memberships = memberships::customer_memberships(tx, source).await?;
    let target_segments: BTreeSet<Uuid> = memberships::customer_memberships(tx, target)
        .await?
        .into_iter()
        .map(|m| m.segment_id)
        .collect();
    let mut passed: BTreeMap<Uuid, Change> = BTreeMap::new();
    let mut left: BTreeMap<Uuid, Change> = BTreeMap::new();
    let mut source_statics = Vec::new();
    for m in source_memberships {
        if !m.rule {
            source_statics.push(m.segment_id);
            if !target_segments.contains(&m.segment_id) {
                passed.insert(
                    m.segment_id,
                    Change::Enter {
                        segment_version: m.segment_version,
                    },
                );
            }
        }
        left.insert(
            m.segment_id,
            Change::Exit {
                segment_version: m.segment_version,
            },
        );
    }
    let passed_ids: Vec<Uuid> = passed.keys().copied().collect();
    apply(tx, source, left, &cause).await?;
    apply(tx, target, passed, &cause).await?;
    memberships::record_merge_statics(tx, merge_id, target, &source_statics, &passed_ids).await?;
    reevaluate_customer(tx, target, &cause).await
}

/// Undoes the static side of merge `merge_id`, once (what it recorded is taken): `source`
/// regains every static membership it held at the merge (of segments that still exist), and
/// `target` loses those it held only through the merge, unless that membership ended and began
/// again since. Memberships `target` had on its own stay. Rule memberships are the caller's
/// re-evaluation of both customers afterwards (reason MERGE).
pub async fn unmerge_customers(
    tx: &mut PgConnection,
    merge_id: &str,
    source: &str,
    target: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    let cause = Cause {
        reason: ChangeReason::Merge,
        ..cause.clone()
    };
    memberships::lock_for_incremental(tx).await?;
    let mut regained: BTreeMap<Uuid, Change> = BTreeMap::new();
    let mut given_back: BTreeMap<Uuid, Change> = BTreeMap::new();
    for m in memberships::take_merge_statics(tx, merge_id, target).await? {
        regained.insert(
            m.segment_id,
            Change::Enter {
                segment_version: m.segment_version,
            },
        );
        if m.target_leaves {
            given_back.insert(
                m.segment_id,
                Change::Exit {
                    segment_version: m.segment_version,
                },
            );
        }
    }
    apply(tx, target, given_back, &cause).await?;
    apply(tx, source, regained, &cause).await
}

/// Writes `changes` for one customer: rows, counts (in segment id order, so concurrent
/// transactions lock segment rows in one order), events, cache notifications.
async fn apply(
    tx: &mut PgConnection,
    customer_id: &str,
    changes: BTreeMap<Uuid, Change>,
    cause: &Cause,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let change_cause = cause.change();
    let mut changed_segments = Vec::with_capacity(changes.len());
    for (segment_id, change) in changes {
        match change {
            Change::Enter { segment_version } => {
                let inserted = memberships::insert(
                    tx,
                    segment_id,
                    customer_id,
                    segment_version,
                    cause.now,
                    cause.reason,
                )
                .await?;
                if inserted {
                    memberships::add_to_count(tx, segment_id, 1).await?;
                    let event = events::segment_entered(
                        segment_id,
                        segment_version,
                        customer_id,
                        cause.now,
                        &change_cause,
                    );
                    events::append_customer_event(tx, customer_id, &event).await?;
                    changed_segments.push(segment_id);
                }
            }
            Change::Exit { segment_version } => {
                if let Some(enter_time) = memberships::delete(tx, segment_id, customer_id).await? {
                    memberships::add_to_count(tx, segment_id, -1).await?;
                    let event = events::segment_exited(
                        segment_id,
                        segment_version,
                        customer_id,
                        enter_time,
                        cause.now,
                        &change_cause,
                    );
                    events::append_customer_event(tx, customer_id, &event).await?;
                    changed_segments.push(segment_id);
                }
            }
        }
    }
    if !changed_segments.is_empty() {
        // Sizes first: once a lookup shows the customer's new segments, sizes already agree.
        memberships::notify_segments(tx, &changed_segments).await?;
        memberships::notify_customers(tx, &[customer_id.to_owned()]).await?;
    }
    Ok(())
}

/// Orders segments so that every segment comes after the segments it references (among
/// `segments`); references outside the set are ignored. Ties keep id order.
pub(crate) fn dependency_order(segments: &[(Uuid, Vec<Uuid>)]) -> Vec<Uuid> {
    let known: BTreeSet<Uuid> = segments.iter().map(|(id, _)| *id).collect();
    let mut pending: BTreeMap<Uuid, BTreeSet<Uuid>> = segments
        .iter()
        .map(|(id, refs)| {
            let deps = refs
                .iter()
                .filter(|r| known.contains(r) && *r != id)
                .copied()
                .collect();
            (*id, deps)
        })
        .collect();
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready: Vec<Uuid> = pending
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(id, _)| *id)
            .collect();
        // A cycle cannot be created through the API; if one were stored, break it by id order.
        let ready = if ready.is_empty() {
            pending.keys().next().copied().into_iter().collect()
        } else {
            ready
        };
        for id in ready {
            pending.remove(&id);
            for deps in pending.values_mut() {
                deps.remove(&id);
            }
            order.push(id);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_segments_come_first() {
        let a = Uuid::from_u128(3);
        let b = Uuid::from_u128(2);
        let c = Uuid::from_u128(1);
        // c references b, b references a, a references a static segment outside the set.
        let order = dependency_order(&[(c, vec![b]), (b, vec![a]), (a, vec![Uuid::from_u128(99)])]);
        assert_eq!(order, vec![a, b, c]);
    }
}
