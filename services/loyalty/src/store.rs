//! The `loyalty` schema through sqlx: the SQL, one module per table family, as functions over
//! a connection (or a pool, for reads). The use cases that run it in transactions are in
//! `workflow`.
//!
//! `StoreError` is the service's one error enum (the domain's `Rejection`s by name, database
//! and corrupt-data failures, profiles not answering); `api::error` maps it to `Status`.

pub mod birthdays;
pub mod erasure;
pub mod export;
pub mod jobs;
pub mod ledger;
pub mod lots;
pub mod members;
pub mod merges;
pub mod programs;
pub mod reversals;
pub mod rewards;
pub mod schedule;
pub mod tiers;

use custops_common::idempotency::KeyError;

use crate::directory::DirectoryError;
use crate::domain::Rejection;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules refused it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Stored data that does not parse: a defect.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Profiles gave no usable answer about the customer of an enrolment.
    #[error(transparent)]
    Profiles(#[from] DirectoryError),
}

/// `Result` of the store.
pub type StoreResult<T> = Result<T, StoreError>;

impl From<KeyError> for StoreError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Reused { request_id } => Rejection::RequestIdReused { request_id }.into(),
            KeyError::Database(error) => error.into(),
        }
    }
}

/// The sum of one member's lot points (or of what an operation takes from them). They add up
/// to a balance, which `domain::limits` bounds far inside i64, so an overflow can only be
/// corrupt data: reported as such, never a panic or a wrapped total.
pub(crate) fn points_sum(values: impl IntoIterator<Item = i64>) -> StoreResult<i64> {
    values.into_iter().try_fold(0_i64, |acc, v| {
        acc.checked_add(v)
            .ok_or_else(|| StoreError::Corrupt("a sum of lot points overflows".to_owned()))
    })
}

/// Reads a stored enum code into `T`, or reports corrupt data.
pub(crate) fn decode<T>(value: Option<T>, what: &str) -> StoreResult<T> {
    value.ok_or_else(|| StoreError::Corrupt(format!("unknown {what}")))
}
