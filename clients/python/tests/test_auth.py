"""Tokens minted by the package are the tokens `custops token` mints: same header, claims,
order and signature, so a service that accepts one accepts the other."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

import custops


def decode(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_minted_token_is_byte_for_byte_what_custops_token_prints(running_suite) -> None:
    secret = "s" * 40
    printed = subprocess.run(
        [str(running_suite.binary), "token", "--service", "crm", "--scopes",
         "profiles.read,loyalty.points.write", "--ttl-secs", "600"],
        env={**os.environ, "CUSTOPS_AUTH_MODE": "jwt", "CUSTOPS_AUTH_JWT_SECRET": secret},
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    claims = decode(printed.split(".")[1])

    ours = custops.mint_token(
        "crm", "profiles.read,loyalty.points.write", secret=secret, ttl_secs=600, now=claims["iat"]
    )

    assert ours == printed
    assert claims["exp"] - claims["iat"] == 600
    assert claims["scope"] == "profiles.read loyalty.points.write"


def test_a_token_signed_with_another_key_differs() -> None:
    one = custops.mint_token("crm", ["profiles.read"], secret="a" * 32, now=1_700_000_000)
    other = custops.mint_token("crm", ["profiles.read"], secret="b" * 32, now=1_700_000_000)
    assert one.split(".")[:2] == other.split(".")[:2]
    assert one.split(".")[2] != other.split(".")[2]


def test_a_short_key_or_no_scope_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        custops.mint_token("crm", ["profiles.read"], secret="short")
    with pytest.raises(ValueError, match="scope"):
        custops.TokenMinter("crm", [], secret="k" * 32)


def test_the_minter_reuses_its_token_until_it_nears_expiry() -> None:
    minter = custops.TokenMinter("crm", "profiles.read", secret="k" * 32, ttl_secs=3600)
    assert minter() == minter()
    assert decode(minter().split(".")[1])["sub"] == "crm"
