"""A real single-node Apache Kafka for tests and the demo, driven through deploy/kafka/kafka-local.

The broker is the official Kafka 4.x jars from Maven Central (KRaft: broker and controller in one
JVM), no Docker. Typical use::

    with LocalKafka() as kafka:
        bootstrap = kafka.bootstrap  # "127.0.0.1:PORT"
        ...
        kafka.kill()  # SIGKILL the broker, keep its data (fault tests)
        kafka.restart()  # same ports, same data

``LocalKafka(secure=True, users={"notifier": "pw", ...})`` starts it with a SASL_SSL
listener only (SCRAM-SHA-512 users made at format time, TLS certificates made for the run,
``ca_file``), the StandardAuthorizer and the super user ``admin`` (``admin_password``).

A broker that is still running when the interpreter exits is stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from devkit.scripts import repo_root, run_script

__all__ = ["KafkaUnavailableError", "LocalKafka", "LocalKafkaError", "repo_root", "script_path"]

_FETCH_TIMEOUT = 1800.0  # first run downloads ~45 MB of jars with Maven
_STOP_TIMEOUT = 60.0  # the script waits 30 s for SIGTERM, then SIGKILLs


class LocalKafkaError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message has the details."""


class KafkaUnavailableError(LocalKafkaError):
    """Java 17+ (or Maven, to fetch the jars) is missing: the message says what to install."""


def script_path() -> Path:
    return repo_root() / "deploy" / "kafka" / "kafka-local"


def _run(args: list[str], timeout: float) -> str:
    """Runs the kafka-local script and returns its stdout, stripped."""
    return run_script(
        script_path(), args, timeout, failed=LocalKafkaError, missing=KafkaUnavailableError
    )


class LocalKafka:
    """One local broker with its own state dir (config, data, kafka.log)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        secure: bool = False,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if users and not secure:
            raise ValueError("users need secure=True")
        self._given_dir = state_dir
        self._state_dir: Path | None = None
        self._secure = secure
        self._users = dict(users or {})
        self._users_file: Path | None = None
        self.bootstrap: str | None = None

    @property
    def ca_file(self) -> Path | None:
        """The CA of a secure broker's certificate (PEM)."""
        if not self._secure or self._state_dir is None:
            return None
        return self._state_dir / "tls" / "ca.pem"

    @property
    def admin_password(self) -> str | None:
        """The password of the super user ``admin`` of a secure broker."""
        if not self._secure or self._state_dir is None:
            return None
        return (self._state_dir / "admin.password").read_text(encoding="utf-8").strip()

    @property
    def state_dir(self) -> Path | None:
        """The broker's state dir while it exists (server.properties, data/, kafka.log)."""
        return self._state_dir

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (the script's pid file), else None."""
        if self._state_dir is None:
            return None
        try:
            return int((self._state_dir / "pid").read_text())
        except (OSError, ValueError):
            return None

    @property
    def log_path(self) -> Path | None:
        return None if self._state_dir is None else self._state_dir / "kafka.log"

    def start(self, timeout: float = 120.0) -> str:
        """Starts a fresh broker (fetching the jars first if needed); returns its bootstrap."""
        if self.bootstrap is not None and self.is_running():
            return self.bootstrap
        _run(["fetch"], timeout=_FETCH_TIMEOUT)
        if self._state_dir is None:
            if self._given_dir is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="kafka-local."))
            else:
                self._state_dir = self._given_dir.resolve()
        atexit.register(self._stop_at_exit)
        try:
            self.bootstrap = self._start(timeout, reuse=False)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def restart(self, timeout: float = 120.0) -> str:
        """Starts the broker again on the same ports with the same data (after kill() or not)."""
        if self._state_dir is None:
            raise LocalKafkaError("restart() needs a broker that was started before")
        if self.is_running():
            _run(["stop", "--dir", str(self._state_dir), "--keep"], timeout=_STOP_TIMEOUT)
        atexit.register(self._stop_at_exit)
        self.bootstrap = self._start(timeout, reuse=True)
        return self.bootstrap

    def kill(self) -> None:
        """SIGKILLs the broker (a crash, for fault tests); the state dir and bootstrap stay."""
        if self._state_dir is not None:
            _run(["kill", "--dir", str(self._state_dir)], timeout=_STOP_TIMEOUT)

    def stop(self) -> None:
        """Stops the broker (SIGTERM, then SIGKILL after 30 s) and removes its state dir."""
        state_dir, self._state_dir, self.bootstrap = self._state_dir, None, None
        atexit.unregister(self._stop_at_exit)
        if state_dir is None:
            return
        try:
            _run(["stop", "--dir", str(state_dir)], timeout=_STOP_TIMEOUT)
        finally:
            if self._given_dir is None:
                # Our own mkdtemp dir: gone even if the script refused to remove it.
                shutil.rmtree(state_dir, ignore_errors=True)

    def is_running(self) -> bool:
        if self._state_dir is None:
            return False
        try:
            _run(["status", "--dir", str(self._state_dir)], timeout=30.0)
        except LocalKafkaError:
            return False
        return True

    def _start(self, timeout: float, *, reuse: bool) -> str:
        if self._state_dir is None:
            raise LocalKafkaError("no state dir")
        args = ["start", "--dir", str(self._state_dir), "--timeout", str(max(1, round(timeout)))]
        if reuse:
            args.append("--reuse")
        if self._secure and not reuse:
            args.append("--secure")
            if self._users:
                args += ["--users", str(self._write_users())]
        # The script gives up (and cleans up) after `timeout`; allow it time to do so.
        return _run(args, timeout=timeout + _STOP_TIMEOUT).splitlines()[-1]

    def _write_users(self) -> Path:
        """The users for the format step, in a file only we can read (never in argv)."""
        if self._users_file is None:
            fd, name = tempfile.mkstemp(prefix="kafka-local-users.")
            self._users_file = Path(name)
            atexit.register(self._users_file.unlink, missing_ok=True)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(f"{user} {password}\n" for user, password in self._users.items())
        return self._users_file

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(LocalKafkaError):
            self.stop()

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
