"""The layers are a contract the test command enforces (import-linter, `.importlinter`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("services", "schemas", "devkit"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    return tree


def test_the_layers_hold_and_a_service_importing_another_breaks_them(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout[-2000:]
    assert "5 kept, 0 broken" in clean.stdout

    victim = tree / "services" / "booking_events" / "metrics.py"
    victim.write_text(victim.read_text() + "\nimport services.notifier.decide  # noqa\n")
    broken = _lint(tree)
    assert broken.returncode != 0
    assert "no service imports another service BROKEN" in broken.stdout
    assert "services.booking_events.metrics -> services.notifier.decide" in broken.stdout


def test_a_runtime_module_importing_the_devkit_breaks_the_layers(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    victim = tree / "services" / "notifier" / "email.py"
    victim.write_text(victim.read_text() + "\nimport devkit.sinks.smtp_sink  # noqa\n")
    broken = _lint(tree)
    assert broken.returncode != 0
    assert "nothing in services/ imports devkit/" in broken.stdout
    assert "services.notifier.email -> devkit.sinks.smtp_sink" in broken.stdout
