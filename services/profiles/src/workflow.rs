//! The use cases, one function per operation: each opens its transaction (or connection),
//! runs `store`'s SQL and `domain`'s rules in it, appends the outbox events (`events`) before
//! the commit, and answers domain values or a `ProfilesError`. Handlers in `api` parse a
//! request, call one function here and convert the result. Every time stored or decided on
//! is read once from the service clock (`Context::now`).

pub mod activities;
pub mod attributes;
pub mod consents;
pub mod customers;
pub mod merges;
pub mod privacy;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{Clock, Customer, CustomerState};
use crate::error::{ProfilesError, Result};

/// What every use case needs: the pool of the profiles schema and the service clock.
#[derive(Debug, Clone)]
pub struct Context {
    /// Connections whose `search_path` is the profiles schema.
    pub pool: PgPool,
    /// The time source of everything stored or decided on.
    pub clock: Arc<dyn Clock>,
}

impl Context {
    /// Use cases over `pool`, reading time from `clock`.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// Now, by the service clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// FAILED_PRECONDITION unless the customer may be edited (ACTIVE; DELETED when `allow_deleted`).
pub(crate) fn ensure_editable(customer: &Customer, allow_deleted: bool) -> Result<()> {
    match customer.state {
        CustomerState::Active => Ok(()),
        CustomerState::Deleted if allow_deleted => Ok(()),
        CustomerState::Deleted => Err(ProfilesError::CustomerDeleted),
        CustomerState::Merged => Err(ProfilesError::CustomerMerged {
            merged_into: customer.merged_into.unwrap_or(customer.id),
        }),
        CustomerState::Erased => Err(ProfilesError::CustomerErased),
    }
}
