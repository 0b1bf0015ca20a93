"""Fixtures of the operations tests: promtool/prometheus, the metrics target, the catalogue.

Prometheus and promtool come from Debian's ``prometheus`` package, installed by
``deploy/ci/install-system-deps.sh``. Without them these tests skip with the reason, except
with CI=true, where they fail: CI must never pass without having run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.ops.ops_support import (
    CATALOGUE,
    ROOT,
    TARGET_SCRIPT,
    CatalogueEntry,
    MetricsTarget,
    need_tool,
    parse_catalogue,
)


@pytest.fixture(scope="session")
def promtool() -> str:
    return need_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return need_tool("prometheus")


@pytest.fixture(scope="session")
def catalogue() -> dict[str, CatalogueEntry]:
    return parse_catalogue(CATALOGUE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def metrics_target() -> Iterator[MetricsTarget]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The target's own settings must not pick up a developer's .env.
    process = subprocess.Popen(
        [sys.executable, str(TARGET_SCRIPT)],
        cwd=str(TARGET_SCRIPT.parent),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            assert process.stderr is not None
            raise AssertionError(f"metrics target did not start: {process.stderr.read()}")
        info = json.loads(line)
        yield MetricsTarget(
            url=f"http://127.0.0.1:{info['port']}",
            port=info["port"],
            metrics=info["metrics"],
        )
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
