"""Runs the repository's own shell scripts (deploy/kafka/kafka-local, deploy/postgres/pg-local).

Both scripts answer on stdout and say what is wrong on stderr; exit status 2 means "a
package this machine lacks" (Java, Maven, Debian's postgresql), which the callers turn into
their ``...UnavailableError``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["EXIT_MISSING", "repo_root", "run_script"]

# The scripts' exit status when something must be installed first.
EXIT_MISSING = 2


def repo_root() -> Path:
    """The repository root (this file is devkit/scripts.py)."""
    return Path(__file__).resolve().parents[1]


def run_script(
    script: Path,
    args: list[str],
    timeout: float,
    *,
    failed: type[Exception],
    missing: type[Exception],
) -> str:
    """Runs ``bash script args`` from the repository root; returns stdout, stripped.

    A timeout or a non-zero exit raises ``failed`` (``missing`` for ``EXIT_MISSING``) with
    the script's own words, prefixed with ``<script> <verb>``.
    """
    what = f"{script.name} {args[0]}" if args else script.name
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            cwd=repo_root(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise failed(f"{what} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
        error = missing if proc.returncode == EXIT_MISSING else failed
        raise error(f"{what} failed: {detail}")
    return proc.stdout.strip()
