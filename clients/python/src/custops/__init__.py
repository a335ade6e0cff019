"""Python client of custops, the customer-operations gRPC services.

    import custops
    from custops.profiles.v1 import profiles_service_pb2 as profiles

    with custops.connect() as suite:          # custops dev on 127.0.0.1:50051-50054
        created = suite.profiles.CreateCustomer(profiles.CreateCustomerRequest(...))

# Layout
- `custops.<svc>.v1.*_pb2` (+ `.pyi`) and `*_pb2_grpc`: generated from proto/ when the
  package is built; `custops._services`: the typed client class of each service (generated).
- `suite` (`connect`, `Suite`): where the four services are and one client of each.
- `channels` (`channel`, `Tls`): plaintext / TLS / mTLS channels.
- `auth` (`mint_token`, `TokenMinter`): bearer tokens as `custops token` mints them.
- `calls` (`ServiceClient`, `CallDefaults`): deadline, token, request id and retries of a call.
- `retry` (`RetryPolicy`, `new_request_id`): which failures are retried, and request ids.
- `errors` (`CustopsError` and one class per code): failures with decoded google.rpc details.
- `paging` (`iterate`, `pages`): every item of a paged list.
"""

from custops._services import (
    EventFeedService,
    FeedbackService,
    LoyaltyService,
    ProfilesService,
    SegmentationService,
)
from custops.auth import TokenMinter, TokenSource, mint_token, static_token
from custops.calls import CallDefaults, ServiceClient
from custops.channels import Tls, channel
from custops.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    CustopsError,
    DataLoss,
    DeadlineExceeded,
    ErrorInfo,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    RequestIdReused,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from custops.paging import iterate, pages
from custops.retry import RetryPolicy, new_request_id
from custops.suite import Suite, connect

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AlreadyExists",
    "CallDefaults",
    "Cancelled",
    "CustopsError",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorInfo",
    "EventFeedService",
    "FailedPrecondition",
    "FeedbackService",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "LoyaltyService",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "ProfilesService",
    "RequestIdReused",
    "ResourceExhausted",
    "RetryPolicy",
    "SegmentationService",
    "ServiceClient",
    "Suite",
    "Tls",
    "TokenMinter",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "channel",
    "connect",
    "iterate",
    "mint_token",
    "new_request_id",
    "pages",
    "static_token",
]
