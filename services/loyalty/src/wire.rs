//! Domain values as `custops.loyalty.v1` messages: the one place a member, a ledger entry, a
//! program, a reward or a tier change is written for the wire, shared by the API's answers
//! (`api`) and the outbox events (`events`), so neither imports the other; with the two
//! scalar readers both directions share (timestamps, UUIDs). Requests travel the other way in
//! `api` (parsed into domain commands, every bad field collected). Prost types never reach
//! `domain`, `store` or `workflow`.
//!
//! One module per area: `programs` (rules, tiers, benefits, entitlements), `members`
//! (balances, tier progress, lots, the data-subject export), `ledger` (entries, earn
//! calculations), `rewards` (rewards, redemptions), `tiers` (tier changes).

pub mod ledger;
pub mod members;
pub mod programs;
pub mod rewards;
pub mod tiers;

use chrono::{DateTime, Utc};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;
use prost_types::Timestamp;
use uuid::Uuid;

use crate::domain::program::Threshold;

pub(crate) use custops_common::time::to_timestamp as timestamp;

/// A timestamp from the wire; an error saying why not when it is out of range.
pub(crate) fn from_timestamp(t: &Timestamp) -> Result<DateTime<Utc>, String> {
    custops_common::time::from_timestamp(t).ok_or_else(|| "not a valid timestamp".to_owned())
}

/// A UUID from the wire; an error saying why not (empty: "required").
pub(crate) fn parse_uuid(value: &str) -> Result<Uuid, String> {
    if value.is_empty() {
        return Err("required".to_owned());
    }
    Uuid::parse_str(value).map_err(|_| format!("`{value}` is not a UUID"))
}

pub(crate) fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(timestamp)
}

/// A customer id on the wire: empty once the member is anonymised (stored as no customer).
pub(crate) fn customer(id: Uuid) -> String {
    if id.is_nil() {
        String::new()
    } else {
        id.to_string()
    }
}

pub(crate) fn money(amount_minor: i64, currency: &str) -> common::Money {
    common::Money {
        amount_minor,
        currency: currency.to_owned(),
    }
}

/// A qualifying amount (tier threshold, progress or change) on the program's metric.
pub(crate) fn threshold_pb(t: Threshold, currency: &str) -> pb::QualifyingAmount {
    use pb::qualifying_amount::Amount;
    pb::QualifyingAmount {
        amount: Some(match t {
            Threshold::Points(p) => Amount::QualifyingPoints(p),
            Threshold::SpendMinor(s) => Amount::QualifyingSpend(money(s, currency)),
        }),
    }
}
