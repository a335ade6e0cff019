//! The one mapping from loyalty failures to `Status`: every rejection by name, with the
//! `google.rpc.ErrorInfo` reason and metadata the contract documents (domain
//! `custops.loyalty`). Database failures go through the shared `ServiceError` mapping.

use custops_common::error::{ServiceError, status_with_reason};
use tonic::{Code, Status};

use crate::directory::DirectoryError;
use crate::domain::Rejection;
use crate::store::StoreError;

const DOMAIN: &str = "custops.loyalty";

fn with_reason(code: Code, message: String, reason: &str, metadata: &[(&str, String)]) -> Status {
    let metadata = metadata.iter().map(|(k, v)| (*k, v.clone()));
    status_with_reason(code, message, DOMAIN, reason, metadata)
}

/// The status of a rejection.
pub fn rejection_status(rejection: Rejection) -> Status {
    use Code::{AlreadyExists, FailedPrecondition};
    let message = rejection.to_string();
    match rejection {
        Rejection::NotFound { resource, id } => ServiceError::not_found(resource, id).into(),
        Rejection::RequestIdReused { .. } => {
            with_reason(AlreadyExists, message, "REQUEST_ID_REUSED", &[])
        }
        Rejection::InsufficientPoints {
            available,
            requested,
            shortfall,
        } => with_reason(
            FailedPrecondition,
            message,
            "INSUFFICIENT_POINTS",
            &[
                ("shortfall", shortfall.to_string()),
                ("available_points", available.to_string()),
                ("requested_points", requested.to_string()),
            ],
        ),
        Rejection::MemberNotActive { status } => with_reason(
            FailedPrecondition,
            message,
            "MEMBER_NOT_ACTIVE",
            &[("status", status.to_owned())],
        ),
        Rejection::MemberAlreadyEnrolled { member_id } => with_reason(
            AlreadyExists,
            message,
            "MEMBER_ALREADY_ENROLLED",
            &[("member_id", member_id.to_string())],
        ),
        Rejection::CustomerErased => {
            with_reason(FailedPrecondition, message, "CUSTOMER_ERASED", &[])
        }
        Rejection::CustomerNotFound { customer_id } => with_reason(
            Code::NotFound,
            message,
            "CUSTOMER_NOT_FOUND",
            &[("customer_id", customer_id.to_string())],
        ),
        Rejection::CustomerDeleted { customer_id } => with_reason(
            FailedPrecondition,
            message,
            "CUSTOMER_DELETED",
            &[("customer_id", customer_id.to_string())],
        ),
        Rejection::TierInUse { tier_code } => with_reason(
            FailedPrecondition,
            message,
            "TIER_IN_USE",
            &[("tier_code", tier_code)],
        ),
        Rejection::ProgramNotActive => {
            with_reason(FailedPrecondition, message, "PROGRAM_NOT_ACTIVE", &[])
        }
        Rejection::OrderAlreadyEarned { ledger_entry_id } => with_reason(
            AlreadyExists,
            message,
            "ORDER_ALREADY_EARNED",
            &[("ledger_entry_id", ledger_entry_id.to_string())],
        ),
        Rejection::ReversalExceedsRemaining {
            field,
            reversible_points,
            refundable_amount_minor,
        } => {
            let mut metadata = vec![
                ("field", field.to_owned()),
                ("reversible_points", reversible_points.to_string()),
            ];
            if let Some(amount) = refundable_amount_minor {
                metadata.push(("refundable_amount_minor", amount.to_string()));
            }
            with_reason(
                FailedPrecondition,
                message,
                "REVERSAL_EXCEEDS_REMAINING",
                &metadata,
            )
        }
        Rejection::NotReversible { kind } => with_reason(
            FailedPrecondition,
            message,
            "NOT_REVERSIBLE",
            &[("kind", kind.to_owned())],
        ),
        Rejection::AlreadyReversed => {
            with_reason(FailedPrecondition, message, "ALREADY_REVERSED", &[])
        }
        Rejection::RewardNotAvailable => {
            with_reason(FailedPrecondition, message, "REWARD_NOT_AVAILABLE", &[])
        }
        Rejection::RewardOutOfStock { available_stock } => with_reason(
            FailedPrecondition,
            message,
            "REWARD_OUT_OF_STOCK",
            &[("available_stock", available_stock.to_string())],
        ),
        Rejection::RewardTierNotEligible { min_tier_code } => with_reason(
            FailedPrecondition,
            message,
            "REWARD_TIER_NOT_ELIGIBLE",
            &[("min_tier_code", min_tier_code)],
        ),
        Rejection::RewardMemberLimitReached {
            max_quantity_per_member,
        } => with_reason(
            FailedPrecondition,
            message,
            "REWARD_MEMBER_LIMIT_REACHED",
            &[(
                "max_quantity_per_member",
                max_quantity_per_member.to_string(),
            )],
        ),
        Rejection::StockUnlimited => {
            with_reason(FailedPrecondition, message, "STOCK_UNLIMITED", &[])
        }
        Rejection::StockWouldBeNegative { available_stock } => with_reason(
            FailedPrecondition,
            message,
            "STOCK_WOULD_BE_NEGATIVE",
            &[("available_stock", available_stock.to_string())],
        ),
        Rejection::BalanceLimit { balance, limit } => with_reason(
            FailedPrecondition,
            message,
            "BALANCE_LIMIT",
            &[
                ("balance", balance.to_owned()),
                ("limit", limit.to_string()),
            ],
        ),
        Rejection::StockLimit {
            available_stock,
            limit,
        } => with_reason(
            FailedPrecondition,
            message,
            "STOCK_LIMIT",
            &[
                ("available_stock", available_stock.to_string()),
                ("limit", limit.to_string()),
            ],
        ),
        Rejection::InvalidField { field, description } => {
            ServiceError::invalid_argument(field, description).into()
        }
        Rejection::StaleEtag { .. } => ServiceError::Aborted(message).into(),
    }
}

/// The status of a failed look-up in profiles: UNAVAILABLE when profiles could not answer
/// in time (the caller may retry: nothing was recorded), INTERNAL (logged) when it answered
/// something loyalty cannot use, such as a refusal of loyalty's own token.
pub fn directory_status(error: DirectoryError) -> Status {
    match error {
        DirectoryError::Unavailable(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "profiles did not answer a customer look-up");
            ServiceError::Unavailable(
                "profiles could not confirm customer_id now; retry the call".to_owned(),
            )
            .into()
        }
        DirectoryError::Unexpected(detail) => ServiceError::internal(anyhow::anyhow!(
            "customer look-up in profiles failed: {detail}"
        ))
        .into(),
    }
}

/// The status of any store failure.
pub fn status(error: StoreError) -> Status {
    match error {
        StoreError::Rejected(rejection) => rejection_status(rejection),
        StoreError::Database(error) => ServiceError::from(error).into(),
        StoreError::Corrupt(detail) => {
            ServiceError::internal(anyhow::anyhow!("corrupt loyalty data: {detail}")).into()
        }
        StoreError::Profiles(error) => directory_status(error),
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        status(error)
    }
}
