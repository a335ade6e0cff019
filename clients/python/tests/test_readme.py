"""The README's example runs as printed against a suite like `make run`'s (authentication
off), found through the CUSTOPS_<SVC>_URL variables, in a process of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import RunningSuite, launched_suite

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Example section has no python block"
    return match.group(1)


@pytest.fixture(scope="module")
def open_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    log = tmp_path_factory.mktemp("open") / "custops-dev.log"
    with launched_suite(log, {"CUSTOPS_AUTH_MODE": "disabled"}) as running:
        yield running


def test_the_readme_example_runs(open_suite: RunningSuite, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOPS_")}
    for service, addr in open_suite.addrs.items():
        env[f"CUSTOPS_{service.upper()}_URL"] = f"http://{addr}"

    run = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr
    assert "in segment Buyers" in run.stdout
    assert "earned 199 balance 149" in run.stdout
    assert "LEDGER_ENTRY_KIND_EARN 199" in run.stdout
    assert "LEDGER_ENTRY_KIND_REDEEM" in run.stdout
    assert "NPS 9 NPS_CATEGORY_PROMOTER" in run.stdout
