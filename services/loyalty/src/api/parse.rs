//! Field parsers the API's areas share: the idempotency key of a mutation and a required
//! member reference.

use custops_common::auth::Caller;
use custops_common::error::ServiceError;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;
use tonic::Request;

use super::convert::parse_uuid;
use crate::domain::member::MemberRef;

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

/// The member a read names in `field`: by id or by program and customer.
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
