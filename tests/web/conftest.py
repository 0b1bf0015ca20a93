"""Browser tests: headless Chromium from Debian's packages, driven by Playwright.

With CI=true a missing browser, broker or axe-core fails the test; it never skips.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE = ROOT / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed: cannot fetch axe-core")
        assert npm is not None
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(AXE.parents[2]),
                "axe-core@4",
                "--no-audit",
                "--no-fund",
            ],
            check=True,
            timeout=180,
            capture_output=True,
        )
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
        raise
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
