//! The one error type service code returns, and its mapping to gRPC status codes.
//!
//! Handlers return `Result<_, ServiceError>`; `?` on a `sqlx::Error` classifies it (unique
//! violation → ALREADY_EXISTS, serialization failure, deadlock or lock timeout → ABORTED,
//! connection trouble or no free pooled connection → UNAVAILABLE, statement timeout →
//! DEADLINE_EXCEEDED). Validation errors carry a
//! `google.rpc.BadRequest` with one field violation per bad field. Internal errors are logged
//! with the trace id, and the caller gets only that id: no SQL, no stack text.
//!
//! Every status built here fits in the 8 KiB of metadata standard clients accept (grpc-java's
//! default, the smallest): messages, field paths, descriptions and ErrorInfo metadata are
//! clipped (a bad value is quoted by a short prefix at most), and a request with many bad
//! fields reports the first [`MAX_VIOLATIONS`] and counts the rest.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation as RpcFieldViolation, StatusExt};

use crate::trace_context;

/// A field that failed validation: its path in the request (`customer.email`,
/// `items[3].amount_minor`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message.
    pub field: String,
    /// Why the value is not acceptable, in words a caller can act on.
    pub description: String,
}

/// Why a call failed, in the terms of the canonical gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed; one violation per bad field.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{resource} `{id}` was not found")]
    NotFound {
        /// Kind of resource, e.g. "customer".
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The resource (or a unique key of it) already exists.
    #[error("{message}")]
    AlreadyExists {
        /// What already exists.
        message: String,
        /// Machine-readable reason for `google.rpc.ErrorInfo`, e.g. `REQUEST_ID_REUSED`.
        reason: Option<&'static str>,
    },
    /// The system is not in the state the call needs (e.g. insufficient points).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won: stale etag, serialization failure. Retry the whole operation.
    #[error("{0}")]
    Aborted(String),
    /// The caller is known but lacks the scope.
    #[error("{0}")]
    PermissionDenied(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Over capacity or over a quota.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The deadline passed before the work finished.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A dependency (database, another service) is unreachable; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A defect or unexpected failure. Logged in full; the caller sees only a trace id.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The violations in one line (`field: what is wrong; …`), for error messages and logs.
pub fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Field violations sent in one INVALID_ARGUMENT; the message counts the rest.
pub const MAX_VIOLATIONS: usize = 10;
/// Longest `grpc-message` sent, in bytes before percent-encoding (which can triple
/// non-ASCII text).
pub const MAX_MESSAGE_BYTES: usize = 256;
/// Longest field path in a violation.
const MAX_FIELD_BYTES: usize = 128;
/// Longest description of a violation, and of an ErrorInfo metadata value: room for a reason
/// and a short prefix of the bad value.
const MAX_DETAIL_BYTES: usize = 160;

/// `text` cut to at most `max` bytes on a character boundary, with "…" when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

impl ServiceError {
    /// One bad field.
    pub fn invalid_argument(field: impl Into<String>, description: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// The resource `resource` with id `id` does not exist.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        ServiceError::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// Wraps an unexpected failure.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ServiceError::Internal(error.into())
    }

    /// The canonical code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound { .. } => Code::NotFound,
            ServiceError::AlreadyExists { .. } => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Aborted(_) => Code::Aborted,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

/// Collects every field violation of a request, so the caller learns all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records a violation of `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Takes the result of a field conversion: the value, or `None` with the violation recorded.
    pub fn take<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|description| self.add(field, description))
            .ok()
    }

    /// `Ok` when nothing was recorded, else INVALID_ARGUMENT with every violation.
    pub fn into_result(self) -> Result<(), ServiceError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::InvalidArgument(self.0))
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        classify_database_error(error)
    }
}

/// Postgres error classes (SQLSTATE) that say something a caller can act on.
fn classify_database_error(error: sqlx::Error) -> ServiceError {
    use sqlx::Error as E;
    if matches!(error, E::PoolTimedOut) {
        crate::metrics::record_pool_timeout();
    }
    match &error {
        E::Database(db) => match db.code().as_deref() {
            Some("23505") => ServiceError::AlreadyExists {
                message: "a resource with the same unique key already exists".to_owned(),
                reason: None,
            },
            // serialization_failure, deadlock_detected: the transaction lost a race.
            Some("40001" | "40P01") => ServiceError::Aborted(
                "the operation conflicted with a concurrent change; retry it".to_owned(),
            ),
            // lock_not_available: the lock timeout fired while another change held the row.
            Some("55P03") => ServiceError::Aborted(
                "a concurrent change held what this call needed for too long; retry it".to_owned(),
            ),
            // query_canceled: the statement timeout fired.
            Some("57014") => ServiceError::DeadlineExceeded(
                "the database did not answer within the statement timeout".to_owned(),
            ),
            // connection_exception class, too_many_connections, admin/crash shutdown,
            // cannot_connect_now, read-only standby after a failover.
            Some(code)
                if code.starts_with("08")
                    || matches!(code, "53300" | "57P01" | "57P02" | "57P03" | "25006") =>
            {
                unavailable(error)
            }
            _ => ServiceError::Internal(error.into()),
        },
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
            unavailable(error)
        }
        _ => ServiceError::Internal(error.into()),
    }
}

fn unavailable(error: sqlx::Error) -> ServiceError {
    tracing::warn!(%error, "database unavailable");
    ServiceError::Unavailable("the database is unavailable; retry later".to_owned())
}

/// The `google.rpc.ErrorInfo` domain of the suite's reasons (loyalty's contract names its own,
/// "custops.loyalty").
pub const ERROR_DOMAIN: &str = "custops";

/// A status carrying the contract's machine-readable `reason` as `google.rpc.ErrorInfo` in
/// `domain`, with `metadata` (e.g. the id of what already exists, a shortfall). The one place
/// the services build such statuses; each service's error mapping picks code, reason and
/// metadata per variant.
pub fn status_with_reason<K: Into<String>>(
    code: Code,
    message: impl Into<String>,
    domain: &str,
    reason: &str,
    metadata: impl IntoIterator<Item = (K, String)>,
) -> Status {
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.into(), clip(&value, MAX_DETAIL_BYTES)))
        .collect();
    Status::with_error_details(
        code,
        clip(&message.into(), MAX_MESSAGE_BYTES),
        ErrorDetails::with_error_info(reason, domain, metadata),
    )
}

/// No ErrorInfo metadata.
pub fn no_metadata() -> std::iter::Empty<(String, String)> {
    std::iter::empty()
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        let code = error.code();
        match error {
            ServiceError::InvalidArgument(violations) => {
                let total = violations.len();
                let sent: Vec<FieldViolation> = violations
                    .into_iter()
                    .take(MAX_VIOLATIONS)
                    .map(|v| FieldViolation {
                        field: clip(&v.field, MAX_FIELD_BYTES),
                        description: clip(&v.description, MAX_DETAIL_BYTES),
                    })
                    .collect();
                let more = match total - sent.len() {
                    0 => String::new(),
                    n => format!(" (and {n} more bad fields)"),
                };
                // The count survives the clip: it is what tells a caller the list is partial.
                let message = format!(
                    "{}{more}",
                    clip(
                        &format!("invalid argument: {}", describe(&sent)),
                        MAX_MESSAGE_BYTES - more.len()
                    )
                );
                let details = ErrorDetails::with_bad_request(
                    sent.into_iter()
                        .map(|v| RpcFieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(code, message, details)
            }
            ServiceError::AlreadyExists {
                message,
                reason: Some(reason),
            } => status_with_reason(code, message, ERROR_DOMAIN, reason, no_metadata()),
            ServiceError::Internal(error) => {
                let trace_id = trace_context::current_trace_id();
                tracing::error!(error = format!("{error:#}"), trace_id = %trace_id.as_deref().unwrap_or("-"), "internal error");
                let message = match trace_id {
                    Some(id) => format!("internal error (trace id {id})"),
                    None => "internal error".to_owned(),
                };
                Status::new(code, message)
            }
            other => Status::new(code, clip(&other.to_string(), MAX_MESSAGE_BYTES)),
        }
    }
}

/// Bytes a status takes as gRPC metadata (names and values of `grpc-status`,
/// `grpc-message` and `grpc-status-details-bin`, as sent), for checking the 8 KiB bound.
pub fn metadata_bytes(status: &Status) -> usize {
    let mut headers = http::HeaderMap::new();
    // A status whose message or details cannot be encoded is sent as a bare code.
    let _ = status.add_header(&mut headers);
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_a_bad_request_naming_each_field() {
        let mut v = Violations::new();
        v.check(false, "customer.email", "not an email address");
        v.check(true, "customer.phone", "never recorded");
        v.add("page_size", "must be 0-1000");
        let status = Status::from(v.into_result().err().unwrap_or_else(|| {
            ServiceError::internal(anyhow::anyhow!("violations were not reported"))
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["customer.email", "page_size"]);
    }

    #[test]
    fn errors_fit_in_8_kib_of_metadata_whatever_the_input() {
        let huge = "x".repeat(1024 * 1024);
        let wide = "数".repeat(100_000);
        // A 1 MB bad value, quoted in the description and in the path.
        let mut v = Violations::new();
        v.add(
            format!("customer_ids[{huge}]"),
            format!("`{huge}` is not a UUID"),
        );
        let one = Status::from(v.into_result().err().unwrap_or_else(|| {
            ServiceError::internal(anyhow::anyhow!("violations were not reported"))
        }));
        // A thousand bad fields, with non-ASCII text that percent-encoding triples.
        let mut v = Violations::new();
        for i in 0..1000 {
            v.add(format!("tags[{i}]"), format!("`{wide}` is too long"));
        }
        let many = Status::from(v.into_result().err().unwrap_or_else(|| {
            ServiceError::internal(anyhow::anyhow!("violations were not reported"))
        }));
        let reason = status_with_reason(
            Code::FailedPrecondition,
            wide.clone(),
            ERROR_DOMAIN,
            "SOME_REASON",
            [("customer_id", huge.clone()), ("other", wide.clone())],
        );
        let not_found = Status::from(ServiceError::not_found("customer", huge.clone()));
        for status in [&one, &many, &reason, &not_found] {
            let bytes = metadata_bytes(status);
            assert!(bytes < 8 * 1024, "{bytes} bytes: {:?}", status.code());
            assert!(bytes > 20, "the check measures something: {bytes}");
        }
        let fields = |status: &Status| -> Vec<RpcFieldViolation> {
            status
                .get_details_bad_request()
                .map(|b| b.field_violations)
                .unwrap_or_default()
        };
        let sent = fields(&many);
        assert_eq!(sent.len(), MAX_VIOLATIONS);
        assert_eq!(sent[0].field, "tags[0]");
        assert!(
            many.message().ends_with("(and 990 more bad fields)"),
            "{}",
            many.message()
        );
        let first = fields(&one);
        assert!(first[0].description.starts_with("`xxxx"), "{first:?}");
        // Without the clip the same statuses would not fit: the check can fail.
        let unclipped = Status::new(Code::InvalidArgument, huge.clone());
        assert!(metadata_bytes(&unclipped) > 8 * 1024);
    }

    #[test]
    fn clipping_keeps_short_text_and_cuts_on_character_boundaries() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 8), "abcde…");
        let cut = clip("数数数数", 8);
        assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let status = Status::from(ServiceError::internal(anyhow::anyhow!(
            "relation \"secret_table\" does not exist"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret_table"), "{status:?}");
    }

    #[test]
    fn a_reused_request_id_carries_its_reason() {
        let status = Status::from(ServiceError::AlreadyExists {
            message: "request_id was used with a different request".to_owned(),
            reason: Some("REQUEST_ID_REUSED"),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        let reason = status.get_details_error_info().map(|info| info.reason);
        assert_eq!(reason.as_deref(), Some("REQUEST_ID_REUSED"));
    }
}

/// An error with its causes on one line, for logs (`%DisplayChain(&error)`).
#[derive(Debug)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
