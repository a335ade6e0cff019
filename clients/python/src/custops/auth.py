"""Bearer tokens for custops calls.

With authentication on (`CUSTOPS_AUTH_MODE=jwt`, the default outside `custops dev`) every call
but health and reflection needs `authorization: Bearer <token>`, a token naming the caller and
the scopes of the method (each RPC's comment in proto/ names its scope). A client gets its
token one of two ways:

* from a callable you pass as `token=` (your secret store, a token service, a constant):
  it is asked before every attempt, so it may refresh;
* minted here with `TokenMinter`, exactly as `custops token` mints one: an HS256 JWT signed
  with the suite's shared key (`CUSTOPS_AUTH_JWT_SECRET`, at least 32 bytes) whose claims are
  `sub` (the caller), `scope` (space-separated), `aud` (`CUSTOPS_AUTH_AUDIENCE`, default
  "custops"), `iss` "custops", `iat` and `exp`. Services refuse tokens valid for longer than
  `CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS` (default a day).

Only the standard library is used: HS256 is HMAC-SHA256 over base64url text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from typing import Callable, Optional, Sequence, Union

#: Variable holding the suite's shared signing key (the one the services read).
SECRET_VAR = "CUSTOPS_AUTH_JWT_SECRET"
#: Variable holding the audience tokens must name.
AUDIENCE_VAR = "CUSTOPS_AUTH_AUDIENCE"
#: The issuer every custops token names.
ISSUER = "custops"
DEFAULT_AUDIENCE = "custops"
#: Shortest key the services accept.
MIN_SECRET_BYTES = 32
#: `custops token`'s default validity.
DEFAULT_TTL_SECS = 3600

#: What `token=` accepts: a callable answering the current token.
TokenSource = Callable[[], str]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(
    subject: str,
    scopes: Union[str, Sequence[str]],
    *,
    secret: Optional[str] = None,
    audience: Optional[str] = None,
    ttl_secs: int = DEFAULT_TTL_SECS,
    now: Optional[int] = None,
) -> str:
    """A token as `custops token --service SUBJECT --scopes SCOPES --ttl-secs TTL` prints it.

    `secret` and `audience` default to `CUSTOPS_AUTH_JWT_SECRET` and `CUSTOPS_AUTH_AUDIENCE`
    (default "custops"); `scopes` is a list or a comma/space-separated string.
    """
    key = secret if secret is not None else os.environ.get(SECRET_VAR)
    if not key:
        raise ValueError(f"no signing key: pass secret= or set {SECRET_VAR}")
    if len(key.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ValueError(f"the signing key must be at least {MIN_SECRET_BYTES} bytes")
    if not subject:
        raise ValueError("the token needs a subject (the calling service's name)")
    if ttl_secs < 1:
        raise ValueError("ttl_secs must be at least 1")
    if isinstance(scopes, str):
        scopes = scopes.replace(",", " ").split()
    scope_list = [s for s in scopes if s]
    if not scope_list:
        raise ValueError("the token needs at least one scope, e.g. profiles.read")
    issued = int(time.time()) if now is None else now
    claims = {
        "sub": subject,
        "scope": " ".join(scope_list),
        "aud": audience or os.environ.get(AUDIENCE_VAR) or DEFAULT_AUDIENCE,
        "iss": ISSUER,
        "iat": issued,
        "exp": issued + ttl_secs,
    }
    header = {"typ": "JWT", "alg": "HS256"}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = hmac.new(key.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    return signing_input + "." + _b64url(signature.digest())


class TokenMinter:
    """A `TokenSource` minting tokens locally (`mint_token`), each reused until it has less
    than a tenth of its life (at least 30 s) left, then replaced. Thread-safe.

        custops.connect(token=TokenMinter("crm", ["profiles.read", "profiles.write"]))
    """

    def __init__(
        self,
        subject: str,
        scopes: Union[str, Sequence[str]],
        *,
        secret: Optional[str] = None,
        audience: Optional[str] = None,
        ttl_secs: int = DEFAULT_TTL_SECS,
    ) -> None:
        self._args = dict(subject=subject, scopes=scopes, secret=secret, audience=audience)
        self._ttl = ttl_secs
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0
        # Fail now on a missing key or bad arguments, not on the first call.
        self()

    def __call__(self) -> str:
        with self._lock:
            now = time.time()
            if not self._token or now >= self._renew_at:
                self._token = mint_token(ttl_secs=self._ttl, now=int(now), **self._args)  # type: ignore[arg-type]
                self._renew_at = now + self._ttl - max(30.0, self._ttl / 10)
            return self._token


def static_token(token: str) -> TokenSource:
    """A `TokenSource` that always answers `token` (e.g. the output of `custops token`)."""
    return lambda: token
