"""Exceptions raised by custops calls, with the service's `google.rpc` error details decoded.

Every custops service answers a failed call with a canonical gRPC code and, in the
`grpc-status-details-bin` trailer, a `google.rpc.Status` whose details say why: a
`BadRequest` naming each bad field (INVALID_ARGUMENT), an `ErrorInfo` with a stable `reason`,
its `domain` and `metadata` (ALREADY_EXISTS, FAILED_PRECONDITION, …), sometimes a
`PreconditionFailure`. Callers should branch on those, never on message text, so this module
turns each failed call into one exception class per gRPC code (`InvalidArgument`,
`FailedPrecondition`, …, all `CustopsError`) carrying the decoded details as plain attributes.
`RequestIdReused` (an `AlreadyExists`) is raised for the ErrorInfo reason the contracts give a
request id used for a different request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

#: Trailer holding the serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: ErrorInfo reason of a request id already taken by another request (AIP-155).
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (`google.rpc.BadRequest.FieldViolation`)."""

    #: Path of the field in the request, e.g. `customer.identities[0].value`.
    field: str
    #: Why the value is not acceptable.
    description: str
    #: Machine-readable reason, when the service gives one.
    reason: str = ""


@dataclass(frozen=True)
class ErrorInfo:
    """Why the call failed, in stable terms (`google.rpc.ErrorInfo`)."""

    #: Stable reason in UPPER_SNAKE_CASE, e.g. `INSUFFICIENT_POINTS`.
    reason: str
    #: Who defines the reason, e.g. `custops.loyalty`.
    domain: str
    #: Facts about the failure, e.g. `{"shortfall": "40"}` (values are strings).
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (`google.rpc.PreconditionFailure.Violation`)."""

    type: str
    subject: str
    description: str


class CustopsError(Exception):
    """A custops call that failed: its gRPC code and message plus the decoded details.

    Subclasses exist per gRPC code; catch `CustopsError` for any failure.
    """

    #: The gRPC code; subclasses fix it.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        method: str = "",
        request_id: str = "",
        attempts: int = 1,
        field_violations: Sequence[FieldViolation] = (),
        error_info: Optional[ErrorInfo] = None,
        precondition_violations: Sequence[PreconditionViolation] = (),
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        #: The status message (`grpc-message`), for people; branch on the details instead.
        self.message = message
        #: The full RPC path, e.g. `/custops.loyalty.v1.LoyaltyService/RedeemPoints`.
        self.method = method
        #: The request id the call carried (empty when the request has no such field).
        self.request_id = request_id
        #: How many times the call was sent (more than 1 after retries).
        self.attempts = attempts
        #: Every bad field (`BadRequest`), in the service's order.
        self.field_violations: Tuple[FieldViolation, ...] = tuple(field_violations)
        #: The `ErrorInfo`, when the service sent one.
        self.error_info = error_info
        #: Every unmet precondition (`PreconditionFailure`).
        self.precondition_violations: Tuple[PreconditionViolation, ...] = tuple(
            precondition_violations
        )
        #: Every detail as sent, including kinds this module does not decode.
        self.details: Tuple[any_pb2.Any, ...] = tuple(details)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason, or "" when there is none."""
        return self.error_info.reason if self.error_info else ""

    @property
    def metadata(self) -> Mapping[str, str]:
        """The ErrorInfo metadata (empty when there is none)."""
        return self.error_info.metadata if self.error_info else {}

    @property
    def fields(self) -> List[str]:
        """The paths of the bad fields, e.g. `["customer.identities[0].value"]`."""
        return [v.field for v in self.field_violations]

    def violation(self, field_path: str) -> Optional[FieldViolation]:
        """The violation of `field_path`, if the service named that field."""
        return next((v for v in self.field_violations if v.field == field_path), None)

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message}"]
        if self.error_info:
            parts.append(f"reason={self.error_info.reason}")
        if self.field_violations:
            parts.append("fields=" + ", ".join(self.fields))
        if self.method:
            parts.append(f"method={self.method}")
        return " ".join(parts)


class Cancelled(CustopsError):
    code = grpc.StatusCode.CANCELLED


class Unknown(CustopsError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(CustopsError):
    """A bad request: `field_violations` names every bad field. Nothing was written."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(CustopsError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(CustopsError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CustopsError):
    code = grpc.StatusCode.ALREADY_EXISTS


class RequestIdReused(AlreadyExists):
    """The request id was used before for a different request (or another RPC): pick a new
    id for a new request; a retry must resend exactly the first request."""


class PermissionDenied(CustopsError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CustopsError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(CustopsError):
    """The state does not allow the call (insufficient points, closed survey, …): see
    `reason` and `metadata`."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(CustopsError):
    """A concurrent change (stale etag, lock conflict): re-read and retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(CustopsError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(CustopsError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CustopsError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(CustopsError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(CustopsError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(CustopsError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: Dict[grpc.StatusCode, Type[CustopsError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def decode_status(data: bytes) -> Tuple[List[any_pb2.Any], dict]:
    """The details of a serialized `google.rpc.Status`, and the decoded ones as keyword
    arguments of `CustopsError`."""
    status = status_pb2.Status.FromString(data)
    violations: List[FieldViolation] = []
    preconditions: List[PreconditionViolation] = []
    info: Optional[ErrorInfo] = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(
                FieldViolation(v.field, v.description, getattr(v, "reason", ""))
                for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and info is None:
            raw = error_details_pb2.ErrorInfo()
            detail.Unpack(raw)
            info = ErrorInfo(raw.reason, raw.domain, dict(raw.metadata))
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions.extend(
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            )
    decoded = {
        "field_violations": violations,
        "error_info": info,
        "precondition_violations": preconditions,
    }
    return list(status.details), decoded


def from_rpc_error(
    error: grpc.RpcError, *, method: str = "", request_id: str = "", attempts: int = 1
) -> CustopsError:
    """The `CustopsError` for a failed call raised by grpcio (a `grpc.Call`)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else "") or ""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    details: List[any_pb2.Any] = []
    decoded: dict = {}
    for key, value in cast(Sequence[Tuple[str, Any]], trailers or ()):
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                details, decoded = decode_status(value)
            except Exception:  # a malformed trailer must not hide the error itself
                details, decoded = [], {}
    cls = _BY_CODE.get(code, CustopsError)
    info = decoded.get("error_info")
    if cls is AlreadyExists and info is not None and info.reason == REQUEST_ID_REUSED:
        cls = RequestIdReused
    return cls(
        message,
        code=code,
        method=method,
        request_id=request_id,
        attempts=attempts,
        details=details,
        **decoded,
    )
