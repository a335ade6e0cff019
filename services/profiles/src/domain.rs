//! The profiles domain in plain Rust: customers, identities, consents, activities and the
//! rules on them (normalisation, update masks, merge survivorship, consent ordering).
//!
//! **Invariant:** nothing here imports tonic, prost or sqlx. Enumerations the contract defines
//! (gender, channels, statuses, …) are carried as their stable proto numbers (`i16`), already
//! checked at the `api` boundary; the domain only needs to compare and store them.

pub mod activity;
pub mod customer;
pub mod duplicates;
pub mod event_type;
pub mod identity;

pub use activity::{Activity, ActivityDetails, ActivityFilter};
pub use customer::{
    AttributeValue, ChannelPreferences, Customer, CustomerFilter, CustomerState, Traits,
};
pub use event_type::{CustomEvent, EventType, PropertyDefinition, PropertyType, PropertyValue};
pub use identity::{Identity, IdentityType};

/// The service clock is the suite's one (`custops_common::clock`): whole microseconds, as
/// Postgres keeps them, so a time answered equals the time stored.
pub use custops_common::clock::{Clock, ManualClock, SystemClock};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Contact channel numbers (`custops.common.v1.ContactChannel`).
pub const CHANNELS: [i16; 4] = [1, 2, 3, 4];

/// Consent status numbers (`ConsentStatus`).
pub mod consent_status {
    /// No consent recorded.
    pub const NONE: i16 = 0;
    /// Opt-in.
    pub const GRANTED: i16 = 1;
    /// Opt-out.
    pub const WITHDRAWN: i16 = 2;
}

/// Who made an audited change: on whose behalf (`ActorKind` number), their opaque id, and the
/// authenticated calling service.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    /// `ActorKind` number; unspecified input is recorded as SYSTEM (3).
    pub kind: i16,
    /// Opaque id in the calling system.
    pub id: String,
    /// The calling service, from its token.
    pub service: String,
}

/// The consent in force on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// Channel number.
    pub channel: i16,
    /// Status number.
    pub status: i16,
    /// Where the decision was captured.
    pub source: String,
    /// Who made it.
    pub actor: Actor,
    /// When the customer decided.
    pub change_time: DateTime<Utc>,
    /// When the service stored it.
    pub record_time: DateTime<Utc>,
}

/// A consent decision as a request carries it (no record time yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentDecision {
    /// Channel number.
    pub channel: i16,
    /// Status decided on.
    pub status: i16,
    /// Where it was captured.
    pub source: String,
    /// On whose behalf (service filled in by the api layer).
    pub actor: Actor,
    /// When the customer decided; `None` means when the service receives it.
    pub change_time: Option<DateTime<Utc>>,
}

/// One entry of the consent audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// Entry id.
    pub id: Uuid,
    /// Customer the change was recorded on.
    pub customer_id: Uuid,
    /// Channel number.
    pub channel: i16,
    /// Status before (0: none).
    pub old_status: i16,
    /// Status decided on.
    pub new_status: i16,
    /// Where it was captured.
    pub source: String,
    /// Who made it.
    pub actor: Actor,
    /// When the customer decided.
    pub change_time: DateTime<Utc>,
    /// When it was recorded.
    pub record_time: DateTime<Utc>,
    /// The merge that caused it, if any.
    pub merge_id: Option<Uuid>,
    /// Recorded for the audit trail only: a newer decision was already in force.
    pub superseded: bool,
}

/// What a decision does to the consent in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Same status as in force: nothing recorded.
    Unchanged,
    /// Older than the decision in force: recorded as superseded, not applied.
    Superseded,
    /// Applied and recorded.
    Applied,
}

/// The newest decision wins whatever order decisions arrive in; repeating the status in
/// force changes nothing.
pub fn consent_outcome(
    current: Option<&Consent>,
    status: i16,
    change_time: DateTime<Utc>,
) -> ConsentOutcome {
    match current {
        Some(current) if change_time < current.change_time => ConsentOutcome::Superseded,
        Some(current) if current.status == status => ConsentOutcome::Unchanged,
        _ => ConsentOutcome::Applied,
    }
}

/// A custom attribute declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDefinition {
    /// Name, `^[a-z][a-z0-9_]{0,63}$`.
    pub name: String,
    /// `AttributeValueType` number (1 string, 2 number, 3 bool, 4 time).
    pub value_type: i16,
    /// What it means.
    pub description: String,
    /// Whether values are personal data (kept out of traits and events).
    pub contains_pii: bool,
    /// When declared.
    pub create_time: DateTime<Utc>,
}

/// How long a merge can be undone (`MergeRecord.unmerge_expire_time` is its merge time plus
/// this).
pub const UNMERGE_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// A stored merge of a source customer into a target.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRecord {
    /// Merge id.
    pub id: Uuid,
    /// Customer merged away.
    pub source_customer_id: Uuid,
    /// Surviving customer.
    pub target_customer_id: Uuid,
    /// `MergeState` number.
    pub state: i16,
    /// The request's survivorship choices: (path, `MergeWinner` number).
    pub choices: Vec<(String, i16)>,
    /// Paths whose value came from the source.
    pub source_value_paths: Vec<String>,
    /// Identities moved.
    pub moved_identity_count: i32,
    /// Activities moved.
    pub moved_activity_count: i64,
    /// Who merged.
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// When.
    pub merge_time: DateTime<Utc>,
    /// Until when it could be undone.
    pub unmerge_expire_time: DateTime<Utc>,
    /// When it was undone, by whom and why.
    pub unmerge: Option<(DateTime<Utc>, Actor, String)>,
}

/// A slug: 1–64 characters of `[a-z0-9_-]` (or without `-` when `allow_dash` is false).
pub fn is_slug(value: &str, allow_dash: bool) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}

/// 1–`max` printable ASCII characters.
pub fn is_printable_ascii(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// At most `max` characters and no control characters.
pub fn is_plain_text(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}
