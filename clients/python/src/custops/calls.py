"""How one RPC is sent: the base of the generated service clients (`custops._services`).

A call gets, in this order: a request id when its message has the field and the caller left
it empty (`retry.with_request_id`); one deadline for the whole call, retries included
(`timeout=` or the client's default); the bearer token, asked of the token source before
every attempt; retries of safe calls per the `RetryPolicy`; and, when it fails for good, a
`custops.errors.CustopsError` with the service's error details decoded. Streaming calls get
the deadline, the token and decoded errors, but are never retried (a stream that failed
half-way cannot be resent blindly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Type, TypeVar

import grpc
from google.protobuf.message import Message

from custops import errors, retry as retry_mod
from custops.auth import TokenSource
from custops.retry import RetryPolicy

#: Extra metadata of one call: (key, value) pairs.
Metadata = Sequence[Tuple[str, str]]

Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class CallDefaults:
    """What every call of a client gets unless the call says otherwise."""

    #: Seconds for the whole call, retries included; None for no deadline (the services still
    #: cap a call at CUSTOPS_MAX_CALL_TIMEOUT_SECS, 30 s by default).
    timeout: Optional[float] = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Asked before every attempt; None sends no token (auth disabled, as in `custops dev`).
    token: Optional[TokenSource] = None
    #: Sent with every call, e.g. (("x-tenant", "acme"),).
    metadata: Metadata = ()


class ServiceClient:
    """Calls the RPCs of one service over one channel. Use the generated subclasses
    (`custops.ProfilesService`, …), usually through `custops.connect`."""

    #: The full service name, e.g. `custops.profiles.v1.ProfilesService` (set by subclasses).
    SERVICE = ""

    def __init__(self, channel: grpc.Channel, defaults: Optional[CallDefaults] = None) -> None:
        self.channel = channel
        self.defaults = defaults or CallDefaults()
        self._callables: Dict[str, Any] = {}
        #: Called as `sleep(seconds)` between attempts; a test may replace it.
        self.sleep: Callable[[float], None] = time.sleep

    def path(self, method: str) -> str:
        return f"/{self.SERVICE}/{method}"

    def _metadata(self, extra: Metadata) -> Tuple[Tuple[str, str], ...]:
        md = list(self.defaults.metadata) + list(extra)
        if self.defaults.token is not None:
            md.append(("authorization", f"Bearer {self.defaults.token()}"))
        return tuple(md)

    def _callable(self, kind: str, method: str, response_type: Type[Message]) -> Any:
        key = f"{kind}:{method}"
        if key not in self._callables:
            factory = getattr(self.channel, kind)
            self._callables[key] = factory(
                self.path(method),
                request_serializer=_serialize,
                response_deserializer=response_type.FromString,
            )
        return self._callables[key]

    def _unary_unary(
        self,
        method: str,
        request: Message,
        response_type: Type[Resp],
        *,
        timeout: Optional[float],
        metadata: Metadata,
        retry: Optional[RetryPolicy],
    ) -> Resp:
        policy = retry or self.defaults.retry
        budget = timeout if timeout is not None else self.defaults.timeout
        deadline = None if budget is None else time.monotonic() + budget
        request, request_id = retry_mod.with_request_id(request)
        call = self._callable("unary_unary", method, response_type)
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return call(request, timeout=remaining, metadata=self._metadata(metadata))  # type: ignore[no-any-return]
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
                safe = retry_mod.safe_to_resend(method, request, request_id, code)
                if policy.should_retry(code, attempt, safe):
                    pause = policy.backoff(attempt)
                    if deadline is None or time.monotonic() + pause < deadline:
                        self.sleep(pause)
                        continue
                raise errors.from_rpc_error(
                    error, method=self.path(method), request_id=request_id, attempts=attempt
                ) from None

    def _unary_stream(
        self,
        method: str,
        request: Message,
        response_type: Type[Resp],
        *,
        timeout: Optional[float],
        metadata: Metadata,
        retry: Optional[RetryPolicy],
    ) -> Iterator[Resp]:
        del retry  # streams are not retried
        budget = timeout if timeout is not None else self.defaults.timeout
        request, request_id = retry_mod.with_request_id(request)
        call = self._callable("unary_stream", method, response_type)
        try:
            stream = call(request, timeout=budget, metadata=self._metadata(metadata))
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, method=self.path(method), request_id=request_id) from None
        return _converting(stream, self.path(method), request_id)

    def _stream_unary(
        self,
        method: str,
        requests: Iterable[Message],
        response_type: Type[Resp],
        *,
        timeout: Optional[float],
        metadata: Metadata,
        retry: Optional[RetryPolicy],
    ) -> Resp:
        del retry
        budget = timeout if timeout is not None else self.defaults.timeout
        call = self._callable("stream_unary", method, response_type)
        try:
            return call(iter(requests), timeout=budget, metadata=self._metadata(metadata))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, method=self.path(method)) from None

    def _stream_stream(
        self,
        method: str,
        requests: Iterable[Message],
        response_type: Type[Resp],
        *,
        timeout: Optional[float],
        metadata: Metadata,
        retry: Optional[RetryPolicy],
    ) -> Iterator[Resp]:
        del retry
        budget = timeout if timeout is not None else self.defaults.timeout
        call = self._callable("stream_stream", method, response_type)
        try:
            stream = call(iter(requests), timeout=budget, metadata=self._metadata(metadata))
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, method=self.path(method)) from None
        return _converting(stream, self.path(method), "")


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _converting(stream: Iterator[Resp], method: str, request_id: str) -> Iterator[Resp]:
    """`stream`'s messages, with a failure raised as a `CustopsError`."""
    try:
        yield from stream
    except grpc.RpcError as error:
        raise errors.from_rpc_error(error, method=method, request_id=request_id) from None
