"""A real custops suite for the client's tests, started once per session.

It builds nothing: it runs the `custops` binary `make test` builds (`$CUSTOPS_BIN`, else
`$CARGO_TARGET_DIR/debug/custops`, else the checkout's `target/debug/custops`) as
`custops dev --no-sample-data` on free ports, with authentication on (a random key this
session mints its tokens with, as `custops token` would), against a database of its own
(`custops_pytest_<random>` on the server of `$DATABASE_URL`, dropped afterwards) and a Redis
database number of its own on the server of `$REDIS_URL`. `scripts/dev-env.sh` sets both
variables; the tests talk to the suite only through the `custops` package.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional
from urllib.parse import urlparse, urlunparse

import pytest

import custops

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("profiles", "segmentation", "loyalty", "feedback")
START_TIMEOUT = 180.0


def custops_binary() -> Path:
    explicit = os.environ.get("CUSTOPS_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "custops"


def all_scopes(binary: Path) -> List[str]:
    """Every scope some method requires, as `custops token` lists them when asked for an
    unknown one: the session's token opens everything."""
    probe = subprocess.run(
        [str(binary), "token", "--service", "pytest", "--scopes", "no.such.scope"],
        env={**os.environ, "CUSTOPS_AUTH_JWT_SECRET": "x" * 32},
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"valid scopes: ([a-z., ]+)", probe.stderr)
    if not match:
        pytest.fail(f"custops token did not list the scopes:\n{probe.stderr}")
    return [scope.strip() for scope in match.group(1).split(",")]


def psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    if candidates:
        return str(candidates[-1])
    pytest.fail("psql not found: the tests create their own database with it")


def run_sql(admin_url: str, sql: str) -> None:
    subprocess.run(
        [psql(), admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


def with_path(url: str, path: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=path))


class RunningSuite:
    """A `custops dev` child process and where its services listen."""

    def __init__(
        self, process: subprocess.Popen, addrs: Dict[str, str], secret: str, log: Path, binary: Path
    ):
        self.process = process
        self.binary = binary
        self.scopes = all_scopes(binary)
        self.addrs = addrs
        self.secret = secret
        self.log = log

    def connect(self, **kwargs: object) -> custops.Suite:
        """Clients of this suite; `token` defaults to one with every scope."""
        kwargs.setdefault("token", custops.TokenMinter("pytest", self.scopes, secret=self.secret))
        return custops.connect(
            profiles=self.addrs["profiles"],
            segmentation=self.addrs["segmentation"],
            loyalty=self.addrs["loyalty"],
            feedback=self.addrs["feedback"],
            env={},
            **kwargs,  # type: ignore[arg-type]
        )


def start_suite(binary: Path, env: Dict[str, str], log: Path) -> RunningSuite:
    log_file = open(log, "wb")
    process = subprocess.Popen(
        [str(binary), "dev", "--no-sample-data"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_file,
        cwd=REPO,
    )
    addrs: Dict[str, str] = {}
    banner_done = threading.Event()

    def read_stdout() -> None:
        # The banner: "custops is running:" then one "  <service>  <host:port>" line each.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace")
            log_file.write(b"[stdout] " + raw)
            match = re.match(r"^\s+(profiles|segmentation|loyalty|feedback)\s+(\S+:\d+)\s*$", line)
            if match:
                addrs[match.group(1)] = match.group(2)
                if len(addrs) == len(SERVICES):
                    banner_done.set()
        banner_done.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not banner_done.wait(START_TIMEOUT) or len(addrs) != len(SERVICES):
        process.kill()
        process.wait()
        log_file.close()
        tail = log.read_text(errors="replace")[-4000:]
        pytest.fail(f"custops dev did not start within {START_TIMEOUT:.0f} s:\n{tail}")
    return RunningSuite(process, addrs, env["CUSTOPS_AUTH_JWT_SECRET"], log, binary)


def stop_suite(suite: RunningSuite) -> None:
    suite.process.send_signal(signal.SIGTERM)
    try:
        suite.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        suite.process.kill()
        suite.process.wait()


@contextlib.contextmanager
def launched_suite(log: Path, extra_env: Dict[str, str]) -> Iterator[RunningSuite]:
    """`custops dev` in a database of its own, with `extra_env` over the session's settings;
    stopped, and its database dropped, on exit."""
    binary = custops_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it first (cargo build --bin custops)")
    base_db = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db_name = f"custops_pytest_{secrets.token_hex(6)}"
    run_sql(base_db, f'CREATE DATABASE "{db_name}"')

    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOPS_")}
    env.update(
        DATABASE_URL=with_path(base_db, "/" + db_name),
        CUSTOPS_LISTEN_HOST="127.0.0.1",
        CUSTOPS_AUTH_MODE="jwt",
        CUSTOPS_AUTH_JWT_SECRET=secrets.token_urlsafe(48),
        RUST_LOG=os.environ.get("TEST_LOG", "warn"),
    )
    for service in SERVICES:
        env[f"CUSTOPS_{service.upper()}_PORT"] = "0"
    redis = os.environ.get("REDIS_URL")
    if redis and urlparse(redis).path in ("", "/"):
        # A database number of our own: no key of ours meets another suite's.
        env["REDIS_URL"] = with_path(redis, f"/{random.randint(1, 15)}")
    env.update(extra_env)

    suite: Optional[RunningSuite] = None
    try:
        suite = start_suite(binary, env, log)
        yield suite
    finally:
        if suite is not None:
            stop_suite(suite)
            if suite.process.returncode not in (0, -signal.SIGTERM):
                print(f"custops dev exited with {suite.process.returncode}; log: {log}", file=sys.stderr)
        run_sql(base_db, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def running_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    """The session's suite: plaintext, authentication on."""
    with launched_suite(tmp_path_factory.mktemp("suite") / "custops-dev.log", {}) as running:
        yield running


@pytest.fixture(scope="session")
def suite(running_suite: RunningSuite) -> Iterator[custops.Suite]:
    with running_suite.connect() as clients:
        yield clients
