"""gRPC channels to a custops service: plaintext, TLS or mutual TLS.

`custops dev` (`make run`) serves plaintext on loopback. A deployment serves TLS
(`CUSTOPS_TLS_CERT_FILE`), and mutual TLS when it names a client CA
(`CUSTOPS_TLS_CLIENT_CA_FILE`): the client then shows a certificate that CA signed.

    channel("127.0.0.1:50051")                                    # plaintext
    channel("loyalty:50053", tls=Tls.from_files(ca="ca.crt"))      # TLS
    channel("loyalty:50053", tls=Tls.from_files(ca="ca.crt", cert="client.crt",
                                                key="client.key"))  # mTLS
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import grpc

#: Largest message a channel accepts: a customer's whole export can be several MiB.
MAX_RECEIVE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Tls:
    """TLS settings of a channel. Without `root_certificates` the system's CAs are trusted;
    with a client certificate and key the channel speaks mutual TLS."""

    #: PEM CA certificates trusted for the server.
    root_certificates: Optional[bytes] = None
    #: PEM client certificate chain, for mTLS (with `private_key`).
    certificate_chain: Optional[bytes] = None
    #: PEM private key of `certificate_chain`.
    private_key: Optional[bytes] = None
    #: Name checked against the server's certificate when it differs from the target's host
    #: (e.g. "loyalty" behind a port-forward to 127.0.0.1).
    server_name: Optional[str] = None

    @classmethod
    def from_files(
        cls,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        server_name: Optional[str] = None,
    ) -> "Tls":
        """TLS settings from PEM files (any may be omitted)."""

        def read(path: Optional[str]) -> Optional[bytes]:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        if (cert is None) != (key is None):
            raise ValueError("mutual TLS needs both the client certificate and its key")
        return cls(read(ca), read(cert), read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def split_target(target: str) -> Tuple[str, Optional[bool]]:
    """`host:port` from a target that may be a URL (`http://h:p` is plaintext, `https://h:p`
    is TLS, as in `CUSTOPS_<SVC>_URL`), and whether the scheme asked for TLS (None: no
    scheme)."""
    if "://" not in target:
        return target, None
    url = urlparse(target)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"`{target}` is not a host:port or an http(s):// URL")
    return url.netloc, url.scheme == "https"


def channel(
    target: str,
    *,
    tls: Optional[Tls] = None,
    options: Sequence[Tuple[str, object]] = (),
    interceptors: Sequence[object] = (),
) -> grpc.Channel:
    """A channel to `target` (`host:port`, or an http(s):// URL): plaintext unless `tls` is
    given or the URL is https. `interceptors` are grpc client interceptors, outermost first."""
    address, scheme_tls = split_target(target)
    if scheme_tls is True and tls is None:
        tls = Tls()
    all_options: List[Tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ]
    if tls is not None and tls.server_name:
        all_options.append(("grpc.ssl_target_name_override", tls.server_name))
        all_options.append(("grpc.default_authority", tls.server_name))
    all_options.extend(options)
    if tls is None:
        ch = grpc.insecure_channel(address, options=all_options)
    else:
        ch = grpc.secure_channel(address, tls.credentials(), options=all_options)
    if interceptors:
        ch = grpc.intercept_channel(ch, *interceptors)  # type: ignore[arg-type]
    return ch
