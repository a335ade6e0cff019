"""`connect`: one object holding a client of each of the four custops services.

Each service listens on its own port (50051 profiles, 50052 segmentation, 50053 loyalty,
50054 feedback by default). Where each is found, per service, first match wins:

1. the argument (`profiles="10.0.0.7:50051"` or a URL, `"https://profiles:50051"`);
2. `CUSTOPS_<SVC>_URL` (what the services themselves read to find each other);
3. `host` plus `CUSTOPS_<SVC>_PORT` or the default port (what `custops dev` binds).
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import grpc

from custops._services import EventFeedService, FeedbackService, LoyaltyService, ProfilesService, SegmentationService
from custops.auth import TokenSource, static_token
from custops.calls import CallDefaults, Metadata
from custops.channels import Tls, channel
from custops.retry import RetryPolicy

#: The services and the ports `custops dev` binds by default.
DEFAULT_PORTS: Mapping[str, int] = {
    "profiles": 50051,
    "segmentation": 50052,
    "loyalty": 50053,
    "feedback": 50054,
}


def resolve_target(service: str, given: Optional[str], host: str, env: Mapping[str, str]) -> str:
    """Where `service` is reached (see the module doc)."""
    if given:
        return given
    upper = service.upper()
    url = env.get(f"CUSTOPS_{upper}_URL")
    if url:
        return url
    port = env.get(f"CUSTOPS_{upper}_PORT") or str(DEFAULT_PORTS[service])
    return f"{host}:{port}"


class Suite:
    """Clients of the four services, one channel each. Close it (or use `with`) when done.

    `suite.profiles`, `suite.segmentation`, `suite.loyalty`, `suite.feedback` call the
    services; `suite.feed("profiles")` is the event feed a service serves."""

    def __init__(self, channels: Dict[str, grpc.Channel], defaults: CallDefaults) -> None:
        self.channels = channels
        self.defaults = defaults
        self.profiles = ProfilesService(channels["profiles"], defaults)
        self.segmentation = SegmentationService(channels["segmentation"], defaults)
        self.loyalty = LoyaltyService(channels["loyalty"], defaults)
        self.feedback = FeedbackService(channels["feedback"], defaults)

    def feed(self, service: str) -> EventFeedService:
        """The `custops.common.v1.EventFeedService` of `service` (its outbox change feed)."""
        return EventFeedService(self.channels[service], self.defaults)

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    def __enter__(self) -> "Suite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    host: str = "127.0.0.1",
    *,
    profiles: Optional[str] = None,
    segmentation: Optional[str] = None,
    loyalty: Optional[str] = None,
    feedback: Optional[str] = None,
    tls: Optional[Tls] = None,
    token: Union[TokenSource, str, None] = None,
    timeout: Optional[float] = 10.0,
    retry: Optional[RetryPolicy] = None,
    metadata: Metadata = (),
    options: Sequence[Tuple[str, object]] = (),
    interceptors: Sequence[object] = (),
    env: Optional[Mapping[str, str]] = None,
) -> Suite:
    """Clients of the four services.

    `tls`: TLS or mTLS settings for every channel (an https:// target turns TLS on by itself).
    `token`: a callable answering the bearer token (e.g. `TokenMinter(...)`), or a token
    string; None sends none (`custops dev` runs with authentication off). `timeout`: the
    default deadline of every call in seconds, retries included (None: none). `retry`: the
    default `RetryPolicy`. `metadata`: sent with every call. `options` and `interceptors` go
    to every grpc channel. `env` replaces `os.environ` when looking up the targets.
    """
    environment = os.environ if env is None else env
    given = {
        "profiles": profiles,
        "segmentation": segmentation,
        "loyalty": loyalty,
        "feedback": feedback,
    }
    channels = {
        name: channel(
            resolve_target(name, target, host, environment),
            tls=tls,
            options=options,
            interceptors=interceptors,
        )
        for name, target in given.items()
    }
    source = static_token(token) if isinstance(token, str) else token
    defaults = CallDefaults(
        timeout=timeout, retry=retry or RetryPolicy(), token=source, metadata=tuple(metadata)
    )
    return Suite(channels, defaults)
