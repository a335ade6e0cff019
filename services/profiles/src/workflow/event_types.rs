//! Event type catalog use cases: declare (at most 500), read one, list, add properties; and
//! the check of custom events against the catalog that recording and importing share.

use std::collections::HashMap;

use custops_common::error::FieldViolation;
use custops_common::outbox;
use sqlx::PgConnection;

use super::Context;
use crate::domain::event_type::{self, Addition, MAX_EVENT_TYPES};
use crate::domain::{ActivityDetails, EventType, PropertyDefinition};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::event_types;

/// Declares an event type (created now, by the service clock); an identical re-declaration
/// returns the existing one and emits nothing.
#[tracing::instrument(skip_all, fields(event_type = %new.name))]
pub async fn create(ctx: &Context, new: EventType) -> Result<EventType> {
    let mut tx = ctx.pool.begin().await?;
    event_types::lock(&mut tx).await?;
    if let Some(existing) = event_types::get(&mut tx, &new.name, false).await? {
        return if existing.same_definition(&new) {
            Ok(existing)
        } else {
            Err(ProfilesError::EventTypeExists)
        };
    }
    if event_types::count(&mut tx).await? >= MAX_EVENT_TYPES {
        return Err(ProfilesError::EventTypeCatalogFull);
    }
    let now = ctx.now();
    let created = EventType {
        create_time: now,
        update_time: now,
        ..new
    };
    event_types::insert(&mut tx, &created).await?;
    outbox::append(&mut tx, events::event_type_defined(&created)).await?;
    tx.commit().await?;
    Ok(created)
}

/// One event type.
pub async fn get(ctx: &Context, name: &str) -> Result<EventType> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    event_types::get(&mut conn, name, false)
        .await?
        .ok_or_else(|| not_found(name))
}

/// Up to `limit` event types named after `after`, by name.
pub async fn list(ctx: &Context, after: Option<String>, limit: i64) -> Result<Vec<EventType>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    event_types::list(&mut conn, after, limit).await
}

/// Appends the properties of `added` the type does not declare yet (identical ones are left
/// as they are); emits EventTypeDefined when something was added.
#[tracing::instrument(skip_all, fields(event_type = %name))]
pub async fn add_properties(
    ctx: &Context,
    name: &str,
    added: Vec<PropertyDefinition>,
) -> Result<EventType> {
    let mut tx = ctx.pool.begin().await?;
    let current = event_types::get(&mut tx, name, true)
        .await?
        .ok_or_else(|| not_found(name))?;
    let append = match event_type::add_properties(&current, &added) {
        Addition::Append(append) => append,
        Addition::Conflict(index) => {
            return Err(ProfilesError::EventPropertyExists {
                field: format!("properties[{index}]"),
            });
        }
        Addition::TooMany => return Err(ProfilesError::EventTypePropertyLimit),
    };
    if append.is_empty() {
        return Ok(current);
    }
    let mut changed = current;
    changed.properties.extend(append);
    changed.update_time = ctx.now();
    event_types::update_properties(&mut tx, &changed).await?;
    outbox::append(&mut tx, events::event_type_defined(&changed)).await?;
    tx.commit().await?;
    Ok(changed)
}

fn not_found(name: &str) -> ProfilesError {
    ProfilesError::NotFound {
        resource: "event type",
        id: name.to_owned(),
    }
}

/// The event types of a set of activities' custom events, by name.
pub type Declared = HashMap<String, EventType>;

/// The declared types of the custom events among `details` (one read for all of them).
pub(crate) async fn declared<'a>(
    conn: &mut PgConnection,
    details: impl Iterator<Item = &'a ActivityDetails>,
) -> Result<Declared> {
    let mut names: Vec<String> = details
        .filter_map(|d| match d {
            ActivityDetails::CustomEvent(e) => Some(e.event_type.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    names.sort();
    names.dedup();
    event_types::named(conn, &names).await
}

/// The field violations of an activity against the catalog: none unless it is a custom event
/// that is not what its declared type allows. Paths are the request's
/// (`activity.custom_event.properties[screen]`).
pub(crate) fn violations(declared: &Declared, details: &ActivityDetails) -> Vec<FieldViolation> {
    let ActivityDetails::CustomEvent(event) = details else {
        return Vec::new();
    };
    event_type::check_event(declared.get(&event.event_type), event)
        .into_iter()
        .map(|v| FieldViolation {
            field: format!("activity.custom_event.{}", v.field),
            description: v.description,
        })
        .collect()
}

/// The declared type of `details` when it is a custom event.
pub(crate) fn type_of<'a>(
    declared: &'a Declared,
    details: &ActivityDetails,
) -> Option<&'a EventType> {
    match details {
        ActivityDetails::CustomEvent(event) => declared.get(&event.event_type),
        _ => None,
    }
}
