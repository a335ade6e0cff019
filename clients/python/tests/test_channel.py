"""Channels: where `connect` finds each service, and plaintext / TLS / mutual TLS against a
second suite serving mTLS with certificates made here (openssl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator

import pytest

import custops
from custops.profiles.v1 import profiles_service_pb2 as pf
from custops.suite import resolve_target

from conftest import RunningSuite, launched_suite


def test_targets_come_from_arguments_then_urls_then_ports() -> None:
    env = {"CUSTOPS_LOYALTY_URL": "https://loyalty:50053", "CUSTOPS_FEEDBACK_PORT": "6054"}
    assert resolve_target("profiles", "10.0.0.7:1", "h", env) == "10.0.0.7:1"
    assert resolve_target("loyalty", None, "h", env) == "https://loyalty:50053"
    assert resolve_target("feedback", None, "h", env) == "h:6054"
    assert resolve_target("segmentation", None, "h", env) == "h:50052"
    from custops.channels import split_target

    assert split_target("https://loyalty:50053") == ("loyalty:50053", True)
    assert split_target("http://127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert split_target("127.0.0.1:50051") == ("127.0.0.1:50051", None)
    with pytest.raises(ValueError):
        split_target("ftp://x:1")


def test_mutual_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ValueError, match="both"):
        custops.Tls.from_files(cert=str(tmp_path / "c.pem"))


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(dir: Path) -> Dict[str, Path]:
    """A CA; a server certificate for localhost / 127.0.0.1 that also serves as the services'
    client identity towards each other; a client certificate for the test."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=custops pytest CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)
    for name, usage, san in (
        ("server", "serverAuth,clientAuth", "DNS:localhost,IP:127.0.0.1"),
        ("client", "clientAuth", "DNS:pytest"),
    ):
        (dir / f"{name}.ext").write_text(
            f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
        )
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=dir)
    return {n: dir / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


@pytest.fixture(scope="module")
def mtls_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the TLS test's certificates")
    dir = tmp_path_factory.mktemp("tls")
    certs = make_certificates(dir)
    env = {
        "CUSTOPS_AUTH_MODE": "disabled",
        "CUSTOPS_TLS_CERT_FILE": str(certs["server.crt"]),
        "CUSTOPS_TLS_KEY_FILE": str(certs["server.key"]),
        "CUSTOPS_TLS_CLIENT_CA_FILE": str(certs["ca.crt"]),
        "CUSTOPS_TLS_CA_FILE": str(certs["ca.crt"]),
    }
    with launched_suite(dir / "custops-dev.log", env) as running:
        yield running, certs


def profiles_call(running: RunningSuite, **kwargs: object) -> pf.ListCustomersResponse:
    with running.connect(token=None, timeout=5.0, retry=custops.RetryPolicy.never(), **kwargs) as clients:
        return clients.profiles.ListCustomers(pf.ListCustomersRequest(page_size=1))


def test_mutual_tls_with_a_client_certificate_works(mtls_suite: tuple) -> None:
    running, certs = mtls_suite
    tls = custops.Tls.from_files(
        ca=str(certs["ca.crt"]), cert=str(certs["client.crt"]), key=str(certs["client.key"])
    )
    assert profiles_call(running, tls=tls).next_page_token == ""
    # The same through the name on the certificate rather than the address.
    named = custops.Tls.from_files(
        ca=str(certs["ca.crt"]), cert=str(certs["client.crt"]), key=str(certs["client.key"]),
        server_name="localhost",
    )
    with running.connect(token=None, tls=named) as clients:
        created = clients.profiles.CreateCustomer(pf.CreateCustomerRequest())
        assert created.customer.customer_id


def test_tls_without_a_client_certificate_is_refused(mtls_suite: tuple) -> None:
    running, certs = mtls_suite
    with pytest.raises(custops.Unavailable):
        profiles_call(running, tls=custops.Tls.from_files(ca=str(certs["ca.crt"])))


def test_plaintext_to_a_tls_port_is_refused(mtls_suite: tuple) -> None:
    running, _ = mtls_suite
    with pytest.raises(custops.Unavailable):
        profiles_call(running)
