//! Activity use cases: record one (idempotent on source and event id), import a batch of a
//! stream in one transaction, and a customer's timeline. Custom events are checked against
//! the event type catalog in the transaction that stores them (`event_types::violations`), and
//! their ActivityRecorded leaves out what the catalog marks personal.

use std::collections::HashMap;

use custops_common::error::FieldViolation;
use custops_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Context;
use super::event_types::{self, Declared};
use crate::domain::activity::{CustomerRef, NewActivity};
use crate::domain::{Activity, ActivityFilter, CustomerState};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::activities;
pub use crate::store::activities::{ActivityCursor, activity_cursor};
use crate::store::{identities, resolve};

/// What RecordActivity did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOutcome {
    /// The stored activity (the first one, for a duplicate).
    pub activity: Activity,
    /// True when nothing was stored.
    pub duplicate: bool,
}

/// One valid item of an import stream with its position.
#[derive(Debug, Clone)]
pub struct ImportItem {
    /// Position in the stream.
    pub index: i64,
    /// The activity.
    pub activity: NewActivity,
}

/// What happened to one import item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// A custom event its declared type does not allow (or of an undeclared type); nothing
    /// stored.
    Invalid(Vec<FieldViolation>),
    /// Stored.
    Accepted,
    /// Already recorded with the same content.
    Duplicate,
    /// No such customer.
    CustomerNotFound,
    /// Customer DELETED or ERASED.
    CustomerNotActive,
    /// (source, event id) recorded with other content.
    EventIdReused,
}

/// Resolves who an activity is about: ACTIVE customer id (merges followed), or why not.
async fn resolve_customer(
    conn: &mut PgConnection,
    customer: &CustomerRef,
) -> Result<std::result::Result<Uuid, ImportOutcome>> {
    let id = match customer {
        CustomerRef::Id(id) => *id,
        CustomerRef::Identity(identity) => match identities::holder(conn, identity).await? {
            Some(id) => id,
            None => return Ok(Err(ImportOutcome::CustomerNotFound)),
        },
    };
    match resolve(conn, id, false).await {
        Ok((customer, _)) if customer.state == CustomerState::Active => Ok(Ok(customer.id)),
        Ok(_) => Ok(Err(ImportOutcome::CustomerNotActive)),
        Err(ProfilesError::NotFound { .. }) => Ok(Err(ImportOutcome::CustomerNotFound)),
        Err(other) => Err(other),
    }
}

/// Records one activity, or answers the one recorded first under its key.
#[tracing::instrument(skip_all, fields(source = %activity.source))]
pub async fn record(ctx: &Context, activity: NewActivity) -> Result<RecordOutcome> {
    let mut tx = ctx.pool.begin().await?;
    let declared = event_types::declared(&mut tx, std::iter::once(&activity.details)).await?;
    let problems = event_types::violations(&declared, &activity.details);
    if !problems.is_empty() {
        return Err(ProfilesError::Invalid(problems));
    }
    let hash = activity.content_hash();
    if let Some(existing) =
        activities::existing(&mut tx, &activity.source, &activity.event_id).await?
    {
        return if existing.1 == hash {
            Ok(RecordOutcome {
                activity: existing.0,
                duplicate: true,
            })
        } else {
            Err(ProfilesError::EventIdReused)
        };
    }
    let customer_id = match resolve_customer(&mut tx, &activity.customer).await? {
        Ok(id) => id,
        Err(ImportOutcome::CustomerNotActive) => {
            let (customer, _) = match &activity.customer {
                CustomerRef::Id(id) => resolve(&mut tx, *id, false).await?,
                CustomerRef::Identity(_) => return Err(ProfilesError::CustomerDeleted),
            };
            return Err(match customer.state {
                CustomerState::Erased => ProfilesError::CustomerErased,
                _ => ProfilesError::CustomerDeleted,
            });
        }
        Err(_) => {
            return Err(match &activity.customer {
                CustomerRef::Id(id) => ProfilesError::customer_not_found(*id),
                CustomerRef::Identity(_) => ProfilesError::NotFound {
                    resource: "identity",
                    id: "(customer_identity)".to_owned(),
                },
            });
        }
    };
    let stored = activities::insert(
        &mut tx,
        &[(customer_id, &activity, hash.clone())],
        ctx.now(),
    )
    .await?;
    match stored.into_iter().next() {
        Some(activity) => {
            let event_type = event_types::type_of(&declared, &activity.details);
            outbox::append(&mut tx, events::activity_recorded(&activity, event_type)).await?;
            tx.commit().await?;
            Ok(RecordOutcome {
                activity,
                duplicate: false,
            })
        }
        None => {
            // A concurrent call stored the same key first.
            drop(tx);
            let mut conn = custops_common::db::read(&ctx.pool).await?;
            let (first, first_hash) =
                activities::existing(&mut conn, &activity.source, &activity.event_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("activity vanished after a conflict"))?;
            if first_hash == hash {
                Ok(RecordOutcome {
                    activity: first,
                    duplicate: true,
                })
            } else {
                Err(ProfilesError::EventIdReused)
            }
        }
    }
}

/// Records a batch of import items in one transaction; answers each item's outcome in
/// order. Items are independent: expected conflicts never fail the batch.
#[tracing::instrument(skip_all, fields(items = items.len()))]
pub async fn import_batch(ctx: &Context, items: &[ImportItem]) -> Result<Vec<ImportOutcome>> {
    let mut tx = ctx.pool.begin().await?;
    let hashes: Vec<String> = items.iter().map(|i| i.activity.content_hash()).collect();
    let mut outcomes: Vec<Option<ImportOutcome>> = vec![None; items.len()];
    // Within the batch, later items with a key seen earlier compare with the first.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut later: Vec<(usize, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = (
            item.activity.source.as_str(),
            item.activity.event_id.as_str(),
        );
        match first_of.get(&key) {
            Some(&first) => later.push((i, first)),
            None => {
                first_of.insert(key, i);
            }
        }
    }
    // Custom events against the catalog, in one read: an item its type refuses is stored by
    // nothing and compared with nothing.
    let declared: Declared =
        event_types::declared(&mut tx, items.iter().map(|i| &i.activity.details)).await?;
    for (i, item) in items.iter().enumerate() {
        let problems = event_types::violations(&declared, &item.activity.details);
        if !problems.is_empty() {
            outcomes[i] = Some(ImportOutcome::Invalid(problems));
        }
    }
    // Customers by id in one query; identities and merged ids one by one (rare).
    let ids: Vec<Uuid> = items
        .iter()
        .filter_map(|i| match i.activity.customer {
            CustomerRef::Id(id) => Some(id),
            CustomerRef::Identity(_) => None,
        })
        .collect();
    let states = activities::customer_states(&mut tx, &ids).await?;
    let mut to_insert: Vec<(usize, Uuid)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if outcomes[i].is_some() || later.iter().any(|(l, _)| *l == i) {
            continue;
        }
        let resolved = match &item.activity.customer {
            CustomerRef::Id(id) => match states.get(id) {
                Some(1) => Ok(*id),
                Some(3) => resolve_customer(&mut tx, &item.activity.customer).await?,
                Some(_) => Err(ImportOutcome::CustomerNotActive),
                None => Err(ImportOutcome::CustomerNotFound),
            },
            CustomerRef::Identity(_) => resolve_customer(&mut tx, &item.activity.customer).await?,
        };
        match resolved {
            Ok(customer_id) => to_insert.push((i, customer_id)),
            Err(outcome) => outcomes[i] = Some(outcome),
        }
    }
    let rows: Vec<(Uuid, &NewActivity, String)> = to_insert
        .iter()
        .map(|(i, customer_id)| (*customer_id, &items[*i].activity, hashes[*i].clone()))
        .collect();
    let stored = activities::insert(&mut tx, &rows, ctx.now()).await?;
    // One statement for the batch's events, in the order the activities were stored.
    let recorded: Vec<_> = stored
        .iter()
        .map(|a| events::activity_recorded(a, event_types::type_of(&declared, &a.details)))
        .collect();
    outbox::append_all(&mut tx, &recorded).await?;
    let mut stored_keys: HashMap<(String, String), ()> = HashMap::new();
    for activity in &stored {
        stored_keys.insert((activity.source.clone(), activity.event_id.clone()), ());
    }
    // Items not stored: their key was recorded before; compare content.
    let conflicted: Vec<usize> = to_insert
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| {
            let a = &items[*i].activity;
            !stored_keys.contains_key(&(a.source.clone(), a.event_id.clone()))
        })
        .collect();
    for i in &to_insert {
        if !conflicted.contains(&i.0) {
            outcomes[i.0] = Some(ImportOutcome::Accepted);
        }
    }
    if !conflicted.is_empty() {
        let sources: Vec<&str> = conflicted
            .iter()
            .map(|i| items[*i].activity.source.as_str())
            .collect();
        let event_ids: Vec<&str> = conflicted
            .iter()
            .map(|i| items[*i].activity.event_id.as_str())
            .collect();
        let known = activities::content_hashes(&mut tx, &sources, &event_ids).await?;
        for i in conflicted {
            let a = &items[i].activity;
            let same = known.get(&(a.source.clone(), a.event_id.clone())) == Some(&hashes[i]);
            outcomes[i] = Some(if same {
                ImportOutcome::Duplicate
            } else {
                ImportOutcome::EventIdReused
            });
        }
    }
    for (i, first) in later {
        if outcomes[i].is_some() {
            continue;
        }
        outcomes[i] = Some(match outcomes[first].clone() {
            Some(ImportOutcome::Accepted | ImportOutcome::Duplicate)
                if hashes[i] == hashes[first] =>
            {
                ImportOutcome::Duplicate
            }
            Some(
                ImportOutcome::Accepted | ImportOutcome::Duplicate | ImportOutcome::EventIdReused,
            ) => ImportOutcome::EventIdReused,
            Some(other) => other,
            None => ImportOutcome::CustomerNotFound,
        });
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(ImportOutcome::CustomerNotFound))
        .collect())
}

/// Up to `limit` activities of a customer's timeline (the customer `customer_id` resolves
/// to) after the cursor `after`, newest first.
#[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
pub async fn list(
    ctx: &Context,
    customer_id: Uuid,
    filter: &ActivityFilter,
    after: Option<ActivityCursor>,
    limit: i64,
) -> Result<Vec<Activity>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let (customer, _) = resolve(&mut conn, customer_id, false).await?;
    activities::list(&mut conn, customer.id, filter, after, limit).await
}
