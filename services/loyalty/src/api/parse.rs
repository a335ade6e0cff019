//! Field parsers the API's areas share: the idempotency key and request id of a mutation, a
//! member reference, text lengths and slugs, number ranges (named in the contract's
//! `1,000,000` form), a ledger change's reason and operator; UUIDs and timestamps come from
//! `crate::wire`. A parser adds what is wrong to the request's `Violations`, so a request
//! answers every bad field at once.

use custops_common::auth::Caller;
use custops_common::error::{ServiceError, Violations};
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use crate::domain::ledger::{EntryContext, parse_request_id};
use crate::domain::member::MemberRef;
pub(super) use crate::wire::{from_timestamp, parse_uuid};

/// The idempotency key of a mutation: caller, request id, method and the request's
/// fingerprint.
pub(super) fn request_key<T: Message>(
    request: &Request<T>,
    method: &'static str,
    request_id: &str,
) -> RequestKey {
    RequestKey::new(
        Caller::service_of(request),
        request_id,
        method,
        request.get_ref(),
    )
}

/// The member a read names in `field`: by id or by program and customer; INVALID_ARGUMENT
/// on the first bad part.
pub(super) fn member_ref(
    field: &str,
    member: Option<pb::MemberRef>,
) -> Result<MemberRef, ServiceError> {
    use pb::member_ref::Key;
    match member.and_then(|m| m.key) {
        Some(Key::MemberId(id)) => parse_uuid(&id)
            .map(MemberRef::Id)
            .map_err(|d| ServiceError::invalid_argument(format!("{field}.member_id"), d)),
        Some(Key::ProgramCustomer(pc)) => Ok(MemberRef::Customer {
            program_id: parse_uuid(&pc.program_id).map_err(|d| {
                ServiceError::invalid_argument(format!("{field}.program_customer.program_id"), d)
            })?,
            customer_id: parse_uuid(&pc.customer_id).map_err(|d| {
                ServiceError::invalid_argument(format!("{field}.program_customer.customer_id"), d)
            })?,
        }),
        None => Err(ServiceError::invalid_argument(field, "required")),
    }
}

/// Refuses `value` outside `min..=max` characters (empty: "required" when `min` > 0).
pub(super) fn check_len(v: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        if min > 0 && n == 0 {
            v.add(field, "required");
        } else {
            v.add(field, format!("must be {min}-{max} characters"));
        }
    }
}

/// `n` with thousands separators, as the contract writes ranges (1,000,000,000).
pub(super) fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Refuses `value` outside `min..=max`, naming `field` and the range.
pub(super) fn check_range(v: &mut Violations, field: &str, value: i64, min: i64, max: i64) {
    if !(min..=max).contains(&value) {
        let range = if min < 0 {
            format!("between {} and {}", grouped(min), grouped(max))
        } else {
            format!("{}-{}", grouped(min), grouped(max))
        };
        v.add(field, format!("must be {range}"));
    }
}

/// Whether `value` is a lower-case slug (`^[a-z][a-z0-9_]*$`) of at most `max` bytes.
pub(super) fn is_slug(value: &str, max: usize) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Refuses a non-empty `value` that is not a slug of at most `max` characters.
pub(super) fn check_optional_slug(v: &mut Violations, field: &str, value: &str, max: usize) {
    if !value.is_empty() && !is_slug(value, max) {
        v.add(
            field,
            format!("must be a lower-case slug of at most {max} characters"),
        );
    }
}

/// The request id of a mutation (`request_id`, 1-128 printable ASCII characters).
pub(super) fn request_id(v: &mut Violations, id: &str) -> String {
    v.take("request_id", parse_request_id(id))
        .unwrap_or_default()
}

/// The member a mutation names in `field`: by id or by program and customer (a placeholder
/// when it is bad, which the collected violation refuses).
pub(super) fn parse_member(
    v: &mut Violations,
    field: &str,
    member: Option<pb::MemberRef>,
) -> MemberRef {
    use pb::member_ref::Key;
    let placeholder = MemberRef::Id(Uuid::nil());
    match member.and_then(|m| m.key) {
        None => {
            v.add(field, "required: a member_id or a program_customer");
            placeholder
        }
        Some(Key::MemberId(id)) => v
            .take(&format!("{field}.member_id"), parse_uuid(&id))
            .map(MemberRef::Id)
            .unwrap_or(placeholder),
        Some(Key::ProgramCustomer(pc)) => {
            let program_id = v.take(
                &format!("{field}.program_customer.program_id"),
                parse_uuid(&pc.program_id),
            );
            let customer_id = v.take(
                &format!("{field}.program_customer.customer_id"),
                parse_uuid(&pc.customer_id),
            );
            match (program_id, customer_id) {
                (Some(program_id), Some(customer_id)) => MemberRef::Customer {
                    program_id,
                    customer_id,
                },
                _ => placeholder,
            }
        }
    }
}

/// The reason, reason code and operator of a ledger change.
pub(super) fn entry_context(
    v: &mut Violations,
    reason: String,
    reason_code: String,
    operator_id: String,
) -> EntryContext {
    check_len(v, "reason", &reason, 0, 500);
    check_optional_slug(v, "reason_code", &reason_code, 64);
    check_len(v, "operator_id", &operator_id, 0, 128);
    EntryContext {
        reason,
        reason_code,
        operator_id,
    }
}
