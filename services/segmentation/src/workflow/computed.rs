//! Computed traits (computed_trait.proto): the definition use cases (create, get, list,
//! update, delete) and the engines that keep the stored values current — for a feed batch's
//! customers ([`refresh_customers`], before their memberships are re-evaluated), for everyone
//! ([`run_all`], COMPUTED_TRAITS and ALL jobs) and for the time-dependent traits
//! ([`run_time_dependent`], the rollover pass).
//!
//! Definitions are kept as the wire message's definition fields, encoded, like rules; every
//! engine parses them against the current catalog (`wire::rules::parse_measure`), so a stored
//! value is always computed by the SQL an event condition of the same measure runs
//! (`store::computed::store_values`).

use chrono::{DateTime, Utc};
use custops_common::error::FieldViolation;
use custops_common::idempotency::{Completed, RequestKey};
use custops_contracts::custops::segmentation::v1 as pb;
use futures_util::FutureExt;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::domain::computed::{ComputedValue, FIELD_PREFIX, MAX_TRAITS, value_over_nothing};
use crate::domain::rule::EventMeasure;
use crate::error::{Error, Result, field_violations};
use crate::state::AppState;
use crate::store::catalog::load_catalog;
use crate::store::computed::{self as store, StoredValue, TraitRecord};
use crate::store::jobs::{self as job_store, JobRecord};
use crate::store::{Who, facts, segments, settings};
use crate::wire::computed::{decode_definition, definition_of, trait_to_proto};
use crate::wire::rules::{WireMeasure, parse_measure};

/// The advisory lock name serialising definition changes (the limit, names, versions).
const LOCK: &str = "computed_traits";

/// The measure fields of a wire trait.
fn wire_measure(wire: &pb::ComputedTrait) -> WireMeasure<'_> {
    WireMeasure {
        event_type: &wire.event_type,
        aggregate: wire.aggregate,
        property: &wire.property,
        window: wire.window.as_ref(),
        filters: &wire.r#where,
    }
}

/// Checks `wire`'s definition against the catalog in `conn`'s transaction: the measure, or
/// every problem named under "computed_trait".
async fn check_definition(
    conn: &mut PgConnection,
    wire: &pb::ComputedTrait,
) -> Result<std::result::Result<EventMeasure, Vec<FieldViolation>>> {
    let catalog = load_catalog(conn).await?;
    let measure =
        parse_measure(&wire_measure(wire), "computed_trait", &catalog).map_err(field_violations);
    Ok(match measure {
        // A stored value has one type; a money aggregate's currency is its comparison's.
        Ok(measure) if measure.is_money() => Err(vec![FieldViolation {
            field: "computed_trait.property".to_owned(),
            description: "a computed trait cannot aggregate a money property (its value \
                would have no single currency); use a number property"
                .to_owned(),
        }]),
        other => other,
    })
}

/// Creates a trait (queueing the COMPUTED_TRAITS job that stores everyone's values), or replays
/// the response stored with `key`. `invalid` holds what the API already found wrong: the
/// definition's problems join them.
pub async fn create(
    state: &AppState,
    caller: &str,
    key: Option<RequestKey>,
    wire: pb::ComputedTrait,
    invalid: Vec<FieldViolation>,
) -> Result<pb::CreateComputedTraitResponse> {
    let now = state.clock.now();
    let caller = caller.to_owned();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        create_in(conn, caller, wire, invalid, now).boxed()
    })
    .await
}

async fn create_in(
    conn: &mut PgConnection,
    caller: String,
    wire: pb::ComputedTrait,
    mut invalid: Vec<FieldViolation>,
    now: DateTime<Utc>,
) -> Result<Completed> {
    settings::lock_config(&mut *conn, LOCK).await?;
    let measure = match check_definition(&mut *conn, &wire).await? {
        Ok(measure) => Some(measure),
        Err(violations) => {
            invalid.extend(violations);
            None
        }
    };
    let Some(measure) = measure.filter(|_| invalid.is_empty()) else {
        return Err(Error::InvalidArgument(invalid));
    };
    if store::get(&mut *conn, &wire.name, false).await?.is_some() {
        return Err(Error::TraitExists(wire.name));
    }
    if store::count(&mut *conn).await? >= MAX_TRAITS {
        return Err(Error::TraitLimitReached { limit: MAX_TRAITS });
    }
    let job = JobRecord::queued("computed_traits", None, "config_changed", &caller, now);
    let definition = definition_of(&wire);
    let record = TraitRecord {
        name: wire.name.clone(),
        description: wire.description.clone(),
        version: 1,
        definition: definition.encode_to_vec(),
        aggregate: measure.aggregate,
        time_dependent: measure.time_dependent(),
        create_time: now,
        update_time: now,
        etag: segments::new_etag(),
        latest_recompute_job_id: Some(job.recompute_job_id),
    };
    if !store::insert(&mut *conn, &record, &caller).await? {
        return Err(Error::TraitExists(wire.name));
    }
    job_store::insert(&mut *conn, &job).await?;
    let response = pb::CreateComputedTraitResponse {
        computed_trait: Some(trait_to_proto(&record, &definition)),
        recompute_job_id: job.recompute_job_id.to_string(),
    };
    Ok(Completed::response(response.encode_to_vec()))
}

/// GetComputedTrait: the trait with its current definition (`version` 0) or an earlier one's.
pub async fn get(state: &AppState, name: &str, version: i64) -> Result<pb::ComputedTrait> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    let record = store::get(&mut conn, name, false)
        .await?
        .ok_or_else(|| Error::not_found("computed trait", name))?;
    let bytes = if version == 0 || version == record.version {
        record.definition.clone()
    } else {
        store::version_definition(&mut conn, name, version)
            .await?
            .ok_or_else(|| {
                Error::not_found("computed trait version", format!("{name}@{version}"))
            })?
    };
    let definition = decode_definition(&bytes).map_err(Error::internal)?;
    Ok(trait_to_proto(&record, &definition))
}

/// ListComputedTraits: at most `limit` traits ordered by name, after `after`.
pub async fn list(
    state: &AppState,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<pb::ComputedTrait>> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    store::list(&mut conn, after, limit)
        .await?
        .iter()
        .map(|r| {
            decode_definition(&r.definition)
                .map(|d| trait_to_proto(r, &d))
                .map_err(Error::internal)
        })
        .collect()
}

/// An UpdateComputedTrait request past the checks that need no database: the masked fields
/// merged into `wire` by the caller are those listed.
#[derive(Debug, Clone)]
pub struct TraitChange {
    pub name: String,
    /// Empty: no etag check.
    pub etag: String,
    pub description: Option<String>,
    /// The new definition fields when any of them is masked (the others as they are: the
    /// caller merges them into the current ones, see [`update`]).
    pub definition: Option<DefinitionChange>,
}

/// The masked definition fields of an update; `None`: unchanged.
#[derive(Debug, Clone, Default)]
pub struct DefinitionChange {
    pub event_type: Option<String>,
    pub aggregate: Option<i32>,
    pub property: Option<String>,
    pub window: Option<Option<pb::ActivityWindow>>,
    pub filters: Option<Vec<pb::EventPropertyFilter>>,
}

/// Applies `change` under the traits' lock: a changed definition is checked against the
/// catalog (INVALID_ARGUMENT before the etag), becomes the next version and queues a
/// COMPUTED_TRAITS job; a changed aggregate is refused while segments read the trait (their
/// rules were checked against its type). Nothing changed: the trait as it stands.
pub async fn update(
    state: &AppState,
    caller: &str,
    change: TraitChange,
) -> Result<pb::UpdateComputedTraitResponse> {
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    settings::lock_config(&mut tx, LOCK).await?;
    let mut record = store::get(&mut tx, &change.name, true)
        .await?
        .ok_or_else(|| Error::not_found("computed trait", &change.name))?;
    let current = decode_definition(&record.definition).map_err(Error::internal)?;
    let mut next = current.clone();
    if let Some(d) = &change.definition {
        if let Some(v) = &d.event_type {
            next.event_type.clone_from(v);
        }
        if let Some(v) = d.aggregate {
            next.aggregate = v;
        }
        if let Some(v) = &d.property {
            next.property.clone_from(v);
        }
        if let Some(v) = &d.window {
            next.window = *v;
        }
        if let Some(v) = &d.filters {
            next.r#where.clone_from(v);
        }
    }
    let measure = check_definition(&mut tx, &next)
        .await?
        .map_err(Error::InvalidArgument)?;
    if !change.etag.is_empty() && change.etag != record.etag {
        return Err(Error::StaleConfig);
    }
    let definition_changed = next != current;
    let description_changed = change
        .description
        .as_ref()
        .is_some_and(|d| *d != record.description);
    if !definition_changed && !description_changed {
        return Ok(pb::UpdateComputedTraitResponse {
            computed_trait: Some(trait_to_proto(&record, &current)),
            recompute_job_id: String::new(),
        });
    }
    if measure.aggregate != record.aggregate {
        let readers = readers(&mut tx, &record.name).await?;
        if !readers.is_empty() {
            return Err(Error::TraitInUse(readers));
        }
    }
    if let Some(description) = change.description {
        record.description = description;
    }
    record.update_time = now;
    record.etag = segments::new_etag();
    let mut job_id = String::new();
    if definition_changed {
        let job = JobRecord::queued("computed_traits", None, "config_changed", caller, now);
        job_store::insert(&mut tx, &job).await?;
        job_id = job.recompute_job_id.to_string();
        record.version += 1;
        record.definition = next.encode_to_vec();
        record.aggregate = measure.aggregate;
        record.time_dependent = measure.time_dependent();
        record.latest_recompute_job_id = Some(job.recompute_job_id);
    }
    store::save(&mut tx, &record, definition_changed, caller).await?;
    tx.commit().await?;
    Ok(pb::UpdateComputedTraitResponse {
        computed_trait: Some(trait_to_proto(&record, &next)),
        recompute_job_id: job_id,
    })
}

/// The rule segments reading trait `name`.
async fn readers(conn: &mut PgConnection, name: &str) -> Result<Vec<Uuid>> {
    Ok(segments::reading_field(conn, &format!("{FIELD_PREFIX}{name}")).await?)
}

/// DeleteComputedTrait: refused while segments read it; removes its versions and values.
pub async fn delete(state: &AppState, name: &str, etag: &str) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    settings::lock_config(&mut tx, LOCK).await?;
    let record = store::get(&mut tx, name, true)
        .await?
        .ok_or_else(|| Error::not_found("computed trait", name))?;
    if !etag.is_empty() && etag != record.etag {
        return Err(Error::StaleConfig);
    }
    let readers = readers(&mut tx, name).await?;
    if !readers.is_empty() {
        return Err(Error::TraitInUse(readers));
    }
    store::delete(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// One computed trait's value for a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitValue {
    pub name: String,
    /// The version the value was computed with: the stored row's, or the current one for a
    /// customer without a row (the value over nothing).
    pub version: i64,
    /// `None`: unset.
    pub value: Option<ComputedValue>,
    /// When the stored value was computed; `None` without a row.
    pub compute_time: Option<DateTime<Utc>>,
}

/// Every trait's value for `customer_id`, ordered by name: the stored one, or the value over
/// nothing for a customer without a row.
pub async fn customer_values(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<TraitValue>> {
    let mut stored: BTreeMap<String, StoredValue> = store::customer_values(&mut *conn, customer_id)
        .await?
        .into_iter()
        .collect();
    Ok(store::all(&mut *conn)
        .await?
        .into_iter()
        .map(|t| match stored.remove(&t.name) {
            Some(s) => TraitValue {
                name: t.name,
                version: s.version,
                value: s.value,
                compute_time: Some(s.compute_time),
            },
            None => TraitValue {
                value: value_over_nothing(t.aggregate),
                name: t.name,
                version: t.version,
                compute_time: None,
            },
        })
        .collect())
}

/// GetCustomerComputedTraits: NOT_FOUND when segmentation holds no facts for the customer.
pub async fn get_customer(state: &AppState, customer_id: &str) -> Result<Vec<TraitValue>> {
    let mut tx = state.pool.begin().await?;
    if !facts::exists(&mut tx, customer_id).await? {
        return Err(Error::not_found("customer", customer_id));
    }
    customer_values(&mut tx, customer_id).await
}

/// The current traits with their measures parsed against the catalog. A trait whose stored
/// definition no longer parses (it cannot: event types only gain properties) is skipped with a
/// warning rather than stopping every feed batch.
async fn current_measures(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<(TraitRecord, EventMeasure)>> {
    let records = store::all(&mut *conn).await?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let catalog = load_catalog(&mut *conn).await?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let definition = decode_definition(&record.definition)?;
        match parse_measure(&wire_measure(&definition), "computed_trait", &catalog) {
            Ok(measure) => out.push((record, measure)),
            Err(_) => {
                tracing::warn!(computed_trait = %record.name, "stored definition no longer valid; values not refreshed");
            }
        }
    }
    Ok(out)
}

/// Stores every trait's values for `customer_ids` (a feed batch's customers whose custom
/// events changed) as of `now`, one statement per trait; run before their memberships are
/// re-evaluated, so rules read the new values in the same transaction.
pub async fn refresh_customers(
    conn: &mut PgConnection,
    customer_ids: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if customer_ids.is_empty() {
        return Ok(());
    }
    let traits = current_measures(&mut *conn).await?;
    if traits.is_empty() {
        return Ok(());
    }
    let ctx = facts::eval_context(&mut *conn, now).await?;
    for (record, measure) in &traits {
        store::store_values(
            &mut *conn,
            &record.name,
            record.version,
            measure,
            Who::Customers(customer_ids),
            &ctx,
        )
        .await?;
    }
    Ok(())
}

/// Stores every trait's values for everyone as of `now` (COMPUTED_TRAITS and ALL jobs).
/// Returns the values written or removed.
pub async fn run_all(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<u64> {
    Ok(run(conn, now, false).await?.0)
}

/// Stores the time-dependent traits' values for everyone as of `now` (the rollover pass).
/// Returns the names of the traits whose values changed.
pub async fn run_time_dependent(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    Ok(run(conn, now, true).await?.1)
}

async fn run(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    time_dependent_only: bool,
) -> anyhow::Result<(u64, Vec<String>)> {
    let ctx = facts::eval_context(&mut *conn, now).await?;
    let mut total = 0;
    let mut changed = Vec::new();
    for (record, measure) in current_measures(&mut *conn).await? {
        if time_dependent_only && !record.time_dependent {
            continue;
        }
        let n = store::store_values(
            &mut *conn,
            &record.name,
            record.version,
            &measure,
            Who::Everyone,
            &ctx,
        )
        .await?;
        total += n;
        if n > 0 {
            changed.push(record.name);
        }
    }
    Ok((total, changed))
}
