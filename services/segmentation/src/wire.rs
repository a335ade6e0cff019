//! The contract's messages for segmentation's types where more than the API needs them:
//! outbox payloads (`events`) carry the same `Segment`, `CustomerRfm`, `CustomerLifecycle` and
//! `RecomputeJob` as responses; the responses of idempotent calls are stored for replays
//! (`workflow`); rules are stored as encoded `Condition`s and decoded by `store` and `workflow`.
//! Conversions only the API needs stay in its area modules (`api/*.rs`).
//!
//! - `rules` (+ `rules/parse`): `Condition` ↔ `Rule`, explanations → wire.
//! - `segments`: stored segments, versions and a customer's memberships → wire.
//! - `derived`: RFM values and lifecycle stages → wire.
//! - `jobs`: recompute jobs → wire, and the column values of the job enums.
//! - `predictions`: a customer's stored predictions → wire.

pub mod computed;
pub mod derived;
pub mod jobs;
pub mod predictions;
pub mod rules;
pub mod segments;

use chrono::{DateTime, Utc};

pub use custops_common::time::to_timestamp as timestamp;

/// The instant of a protobuf timestamp; `None` when unset or out of range.
pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(custops_common::time::from_timestamp)
}
