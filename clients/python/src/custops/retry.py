"""When a failed call is sent again, and the request ids that make that safe.

The contracts (proto/README.md, each service's comment) say: UNAVAILABLE and
RESOURCE_EXHAUSTED may answer any method under failure or load, ABORTED means a concurrent
conflict; all three are worth retrying with back-off — but a mutation only when it carries a
`request_id` (AIP-155: a replay with the same id and payload returns the first answer and
changes nothing; the same id with another payload is REQUEST_ID_REUSED). So:

* every request whose message has a `request_id` field gets one when the caller left it
  empty: a UUID, made once per logical call and sent unchanged on every retry of that call;
* such calls, and reads (`Get…`, `List…`, `Check…`, …), are retried on the codes of the
  `RetryPolicy` within the call's one deadline; other mutations are never retried, nor is an
  ABORTED call that sent an `etag` (stale, it would fail the same way every time).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple

import grpc
from google.protobuf.message import Message

#: The request field AIP-155 names, present on every custops mutation that may be retried.
REQUEST_ID_FIELD = "request_id"

#: Method-name prefixes of calls that change nothing, hence are safe to send twice.
READ_PREFIXES: Tuple[str, ...] = (
    "Get",
    "BatchGet",
    "List",
    "Lookup",
    "Check",
    "BatchCheck",
    "Preview",
    "Explain",
    "Find",
    "Calculate",
    "Export",
)


def new_request_id() -> str:
    """A fresh request id (a random UUID: 36 printable ASCII characters)."""
    return str(uuid.uuid4())


def has_request_id_field(request: Message) -> bool:
    return REQUEST_ID_FIELD in request.DESCRIPTOR.fields_by_name


def with_request_id(request: Message) -> Tuple[Message, str]:
    """`request` with a request id, and that id: the caller's own when set; otherwise a new
    one on a copy (the caller's message is never changed). Messages without the field are
    returned as they are, with "" for the id."""
    if not has_request_id_field(request):
        return request, ""
    current = getattr(request, REQUEST_ID_FIELD)
    if current:
        return request, current
    copy = type(request)()
    copy.CopyFrom(request)
    rid = new_request_id()
    setattr(copy, REQUEST_ID_FIELD, rid)
    return copy, rid


def is_read(method: str) -> bool:
    """Whether the RPC named `method` (e.g. "ListCustomers") only reads."""
    return method.startswith(READ_PREFIXES)


def safe_to_resend(method: str, request: Message, request_id: str, code: grpc.StatusCode) -> bool:
    """Whether sending `request` again after `code` can neither apply it twice nor be
    pointless: reads and calls with a request id, except ABORTED of a request naming an
    `etag` (a stale etag stays stale: re-read, then send a new request)."""
    if code == grpc.StatusCode.ABORTED and "etag" in request.DESCRIPTOR.fields_by_name:
        if getattr(request, "etag"):
            return False
    return bool(request_id) or is_read(method)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and on which codes a call is sent again (exponential back-off with full
    jitter), always within the call's deadline. `RetryPolicy.never()` turns retries off."""

    #: Attempts in all, the first included.
    max_attempts: int = 5
    #: Back-off before the first retry, in seconds; doubles (`multiplier`) up to `max_backoff`.
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    #: Codes worth another attempt.
    codes: FrozenSet[grpc.StatusCode] = field(
        default_factory=lambda: frozenset(
            {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            }
        )
    )

    @classmethod
    def never(cls) -> "RetryPolicy":
        return cls(max_attempts=1)

    def backoff(self, retry_number: int, rng: Optional[random.Random] = None) -> float:
        """Seconds to wait before retry number `retry_number` (1 for the first retry)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry_number - 1))
        return (rng or random).uniform(0, ceiling)

    def should_retry(self, code: grpc.StatusCode, attempt: int, safe: bool) -> bool:
        """Whether attempt number `attempt` (1-based), which failed with `code`, is followed
        by another; `safe` says whether sending the request twice is harmless."""
        return safe and attempt < self.max_attempts and code in self.codes
