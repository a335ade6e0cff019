//! Keeping memberships current: re-evaluating customers after their facts changed (a feed
//! batch's customers together), removing an erased customer, moving memberships on a merge. Each writes memberships,
//! member counts and SegmentEntered / SegmentExited events in the caller's transaction, and
//! notifies the lookup caches, which Postgres delivers only if that transaction commits
//! (see `lookups`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Why the memberships (and derived values) of several customers change together: one reason
/// and evaluation time, and for reason EVENT each customer's own upstream event.
#[derive(Debug, Clone)]
pub struct Causes {
    pub reason: ChangeReason,
    pub now: DateTime<Utc>,
    event_ids: HashMap<String, String>,
}

impl Causes {
    /// `reason` at `now`, no upstream events (yet).
    pub fn new(reason: ChangeReason, now: DateTime<Utc>) -> Self {
        Self {
            reason,
            now,
            event_ids: HashMap::new(),
        }
    }

    /// `cause`, for one customer.
    pub fn single(cause: &Cause, customer_id: &str) -> Self {
        let mut causes = Self::new(cause.reason, cause.now);
        causes.set_event(customer_id, &cause.event_id);
        causes
    }

    /// Names the upstream event behind `customer_id`'s changes.
    pub fn set_event(&mut self, customer_id: &str, event_id: &str) {
        self.event_ids
            .insert(customer_id.to_owned(), event_id.to_owned());
    }

    /// The cause of `customer_id`'s changes.
    pub fn of(&self, customer_id: &str) -> Cause {
        Cause {
            reason: self.reason,
            event_id: self.event_ids.get(customer_id).cloned().unwrap_or_default(),
            now: self.now,
        }
    }
}

/// Which kinds of a customer's facts an event changed: the index from changed fields to the
/// rule segments worth re-evaluating (see [`reevaluate_customers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed(u8);

impl Changed {
    /// Profile traits: demographics, geography, psychographics, tags, attributes, consents.
    pub const TRAITS: Self = Self(1);
    /// Purchases and interactions.
    pub const ACTIVITIES: Self = Self(1 << 1);
    /// Loyalty memberships.
    pub const LOYALTY: Self = Self(1 << 2);
    /// Survey answers and tickets.
    pub const FEEDBACK: Self = Self(1 << 3);
    /// Custom events (read by event conditions, fields "event.<type>").
    pub const EVENTS: Self = Self(1 << 4);
    /// Anything (merges, unmerges): every rule segment is re-evaluated.
    pub const ALL: Self = Self(0b1_1111);

    /// Both kinds.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether any kind of `other` changed.
    pub fn meets(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// The kind of facts a rule field reads; `None` for the values refreshed at every settle
/// (RFM, lifecycle) and for names not known here, which always count as changed.
fn field_kind(field: &str) -> Option<Changed> {
    let (head, _) = field.split_once('.').unwrap_or((field, ""));
    match head {
        "purchase" | "interaction" => Some(Changed::ACTIVITIES),
        "loyalty" => Some(Changed::LOYALTY),
        "feedback" => Some(Changed::FEEDBACK),
        // Computed traits are refreshed when the customer's custom events change.
        "event" | "computed" => Some(Changed::EVENTS),
        "customer" | "geo" | "demographics" | "psychographics" | "consent" | "tags"
        | "attributes" => Some(Changed::TRAITS),
        _ => None,
    }
}

/// Whether `segment`'s rule can answer differently for a customer whose `changed` facts moved:
/// it reads one of them, or something refreshed at every settle, or the time, or other
/// segments (which may have just changed).
fn affected(segment: &segments::RuleSegment, changed: Changed) -> bool {
    changed == Changed::ALL
        || segment.time_dependent
        || !segment.referenced_segment_ids.is_empty()
        || segment.fields.is_empty()
        || segment
            .fields
            .iter()
            .any(|f| field_kind(f).is_none_or(|kind| changed.meets(kind)))
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
    reevaluate_customers(
        tx,
        &[(customer_id.to_owned(), Changed::ALL)],
        &Causes::single(cause, customer_id),
    )
    .await
}

/// Re-evaluates, for each customer, the rule segments its changed facts can affect (see
/// [`affected`]), in dependency order, with every customer's facts and memberships read in a
/// few statements and the changes written together. A customer without facts leaves every
/// rule segment. `customers` sorted by id: rows are locked in that order.
pub async fn reevaluate_customers(
    tx: &mut PgConnection,
    customers: &[(String, Changed)],
    causes: &Causes,
) -> anyhow::Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    memberships::lock_for_incremental(tx).await?;
    let ids: Vec<String> = customers.iter().map(|(id, _)| id.clone()).collect();
    let mut current = memberships::customers_memberships(tx, &ids).await?;
    let mut facts = store::facts::load_facts_many(tx, &ids).await?;
    let rule_segments = segments::rule_segments(tx).await?;
    // Custom events only of the types rules read: most deployments have none.
    let event_types: BTreeSet<String> = rule_segments
        .iter()
        .flat_map(|s| s.rule.event_types())
        .collect();
    if !event_types.is_empty() {
        let event_types: Vec<String> = event_types.into_iter().collect();
        store::custom_events::load_into(tx, &mut facts, Some(&event_types)).await?;
    }
    let ctx = store::facts::eval_context(tx, causes.now).await?;
    let mut writes = Writes::default();
    for (customer_id, changed) in customers {
        let current = current.remove(customer_id).unwrap_or_default();
        let mut changes: BTreeMap<Uuid, Change> = BTreeMap::new();
        match facts.remove(customer_id) {
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
                for segment in rule_segments.iter().filter(|s| affected(s, *changed)) {
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
        writes
            .change(tx, customer_id, changes, &causes.of(customer_id))
            .await?;
    }
    writes.finish(tx).await
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

/// Writes `changes` for one customer: rows, counts, events, cache notifications.
async fn apply(
    tx: &mut PgConnection,
    customer_id: &str,
    changes: BTreeMap<Uuid, Change>,
    cause: &Cause,
) -> anyhow::Result<()> {
    let mut writes = Writes::default();
    writes.change(tx, customer_id, changes, cause).await?;
    writes.finish(tx).await
}

/// Membership changes of one or more customers: the rows are written as they come, the
/// member counts, events and cache notifications gathered and written once at the end.
#[derive(Debug, Default)]
struct Writes {
    /// Member count deltas by segment, applied in segment id order, so concurrent
    /// transactions lock segment rows in one order.
    counts: BTreeMap<Uuid, i64>,
    events: events::CustomerEvents,
    customers: Vec<String>,
}

impl Writes {
    /// Writes the membership rows of `changes` for `customer_id` and gathers the rest.
    async fn change(
        &mut self,
        tx: &mut PgConnection,
        customer_id: &str,
        changes: BTreeMap<Uuid, Change>,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let change_cause = cause.change();
        let mut changed = false;
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
                        *self.counts.entry(segment_id).or_default() += 1;
                        self.events.push(
                            customer_id,
                            &events::segment_entered(
                                segment_id,
                                segment_version,
                                customer_id,
                                cause.now,
                                &change_cause,
                            ),
                        );
                        changed = true;
                    }
                }
                Change::Exit { segment_version } => {
                    if let Some(enter_time) =
                        memberships::delete(tx, segment_id, customer_id).await?
                    {
                        *self.counts.entry(segment_id).or_default() -= 1;
                        self.events.push(
                            customer_id,
                            &events::segment_exited(
                                segment_id,
                                segment_version,
                                customer_id,
                                enter_time,
                                cause.now,
                                &change_cause,
                            ),
                        );
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.customers.push(customer_id.to_owned());
        }
        Ok(())
    }

    /// Writes the counts, the events and the notifications gathered.
    async fn finish(mut self, tx: &mut PgConnection) -> anyhow::Result<()> {
        if self.customers.is_empty() {
            return Ok(());
        }
        for (segment_id, delta) in &self.counts {
            memberships::add_to_count(tx, *segment_id, *delta).await?;
        }
        self.events.append(tx).await?;
        // Sizes first: once a lookup shows the customer's new segments, sizes already agree.
        let segments: Vec<Uuid> = self.counts.keys().copied().collect();
        memberships::notify_segments(tx, &segments).await?;
        memberships::notify_customers(tx, &self.customers).await?;
        Ok(())
    }
}
