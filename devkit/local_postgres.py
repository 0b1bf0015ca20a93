"""A real PostgreSQL on loopback for tests and the demo, driven through deploy/postgres/pg-local.

Debian's ``postgresql`` package, a throw-away cluster in a temp dir, a free port::

    with LocalPostgres() as pg:
        url = pg.create_database("t_abc")  # postgresql+asyncpg://reminders@127.0.0.1:PORT/t_abc

A server still running when the interpreter exits is stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import re
import subprocess
from pathlib import Path
from types import TracebackType

from devkit.scripts import repo_root, run_script

__all__ = ["LocalPostgres", "LocalPostgresError", "PostgresUnavailableError", "script_path"]

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class LocalPostgresError(RuntimeError):
    """The server could not be started or stopped; the message has the details."""


class PostgresUnavailableError(LocalPostgresError):
    """Debian's postgresql package is missing: the message says what to install."""


def script_path() -> Path:
    return repo_root() / "deploy" / "postgres" / "pg-local"


def _run(args: list[str], timeout: float = 120.0) -> str:
    """Runs the pg-local script and returns its stdout, stripped."""
    return run_script(
        script_path(), args, timeout, failed=LocalPostgresError, missing=PostgresUnavailableError
    )


class LocalPostgres:
    def __init__(self) -> None:
        self.state_dir: str | None = None
        self.host_port: str | None = None

    def start(self) -> str:
        """Starts the server; returns the asyncpg URL of its ``postgres`` database."""
        url, _, state_dir = _run(["start"]).partition(" ")
        self.state_dir = state_dir
        self.host_port = url.split("@", 1)[1].split("/", 1)[0]
        atexit.register(self.stop)
        return self.url("postgres")

    def url(self, database: str) -> str:
        if self.host_port is None:
            raise LocalPostgresError("the server is not running")
        return f"postgresql+asyncpg://reminders@{self.host_port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its asyncpg URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        host, port = (self.host_port or "").split(":")
        proc = subprocess.run(
            [
                "psql",
                "-h",
                host,
                "-p",
                port,
                "-U",
                "reminders",
                "-d",
                "postgres",
                "-qAtc",
                f'CREATE DATABASE "{name}"',
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise LocalPostgresError(f"CREATE DATABASE {name} failed: {proc.stderr.strip()}")
        return self.url(name)

    def stop(self) -> None:
        if self.state_dir is None:
            return
        state_dir, self.state_dir = self.state_dir, None
        self.host_port = None
        _run(["stop", state_dir])

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
