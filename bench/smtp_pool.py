"""SmtpPool throughput against raw aiosmtplib, both to the same local SmtpSink.

    .venv/bin/python bench/smtp_pool.py [--messages 5000] [--connections 4]
    .venv/bin/python bench/smtp_pool.py --dkim compare   # SmtpPool unsigned, rsa, ed25519

The sink runs in its own process (it would otherwise share the GIL with the client and
halve what both can do on a small machine). Each round sends the same M pre-composed
messages twice: through SmtpPool (N connections shared by N concurrent senders, or
--concurrency) and through N persistent aiosmtplib.SMTP clients, each sending its share
sequentially in parallel (``sendmail`` of the composed bytes; the pool sends the same
bytes with aiosmtplib's MAIL, RCPT and DATA, the steps of ``sendmail``).
Rounds alternate the order; the median rate of each side is reported, with the CPU each
message cost the client and the sink (CPU per message is far less sensitive than msg/s
to other load on a shared machine).

``--dkim compare`` measures the cost of DKIM signing instead: the same messages through
SmtpPool unsigned, signed with rsa-sha256 (2048 bits) and with ed25519-sha256 (the
notifier's DkimSigningTransport, a fresh key loaded with load_dkim_key), in rotating
order; the raw side is not run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `services` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib

from devkit.sinks.smtp_sink import SmtpSink
from services.common.settings import SmtpSettings
from services.notifier.dkim import DkimSigner, DkimSigningTransport, load_dkim_key
from services.notifier.email import ComposedMail, SmtpOptions, SmtpPool, compose_email

HOST = "127.0.0.1"
EHLO_NAME = "bench.localhost"


def _sink_process(conn: Connection) -> None:
    """Child: a sink that only counts (no parsing, no mbox), driven over a pipe."""
    sink = SmtpSink(keep_messages=False)
    sink.start()
    conn.send(sink.port)
    while True:
        command = conn.recv()
        if command == "count":
            conn.send(sink.received_count)
        elif command == "cpu":
            conn.send(time.process_time())
        elif command == "stop":
            break
    sink.stop()
    conn.send("stopped")


class SinkHandle:
    """The sink, in a child process (default) or in a thread of this process."""

    def __init__(self, in_process: bool) -> None:
        self._local: SmtpSink | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        if in_process:
            self._local = SmtpSink(keep_messages=False)
            self._local.start()
            self.port = self._local.port
        else:
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_sink_process, args=(child,), daemon=True)
            self._proc.start()
            self._conn = parent
            self.port = int(parent.recv())

    def count(self) -> int:
        if self._local is not None:
            return self._local.received_count
        assert self._conn is not None
        self._conn.send("count")
        return int(self._conn.recv())

    def cpu(self) -> float | None:
        """CPU seconds the sink process has used (None when it shares our process)."""
        if self._conn is None:
            return None
        self._conn.send("cpu")
        return float(self._conn.recv())

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()
        if self._conn is not None and self._proc is not None:
            self._conn.send("stop")
            self._conn.recv()
            self._proc.join(timeout=10)
            self._conn.close()


def _messages(count: int) -> list[ComposedMail]:
    return [
        compose_email(
            reminder_id=f"bench-practice/appt-{i}/2026-12-01T08:30:00Z",
            from_address="noreply@praktijk.example",
            from_name="Huisartsenpraktijk Bench",
            to=f"patient{i}@example.org",
            subject=f"Herinnering: uw afspraak op dinsdag 1 december 2026 om 09:30 ({i})",
            text="Beste patiënt,\n\nU heeft morgen om 09:30 een afspraak bij de huisarts.\n"
            "Heeft u een spoedeisende vraag? Bel dan de praktijk: 020-1234567.\n",
            html="<p>Beste patiënt,</p><p>U heeft morgen om 09:30 een afspraak bij de "
            "huisarts.</p><p>Heeft u een spoedeisende vraag? Bel dan de praktijk: "
            "020-1234567.</p>",
            unsubscribe_url="https://portaal.example.org/voorkeuren",
            message_id_domain="reminders.example.org",
        )
        for i in range(count)
    ]


async def run_pool(
    port: int,
    messages: list[ComposedMail],
    connections: int,
    concurrency: int,
    signer: DkimSigner | None = None,
) -> float:
    opts = SmtpOptions(
        host=HOST,
        port=port,
        security="none",
        pool_size=connections,
        # The bench measures steady state; the default 100 would add reconnects.
        max_messages_per_connection=1_000_000,
        local_hostname=EHLO_NAME,
    )
    queue = iter(messages)

    async def worker(pool: SmtpPool) -> None:
        send = DkimSigningTransport(pool, signer).send if signer is not None else pool.send
        for msg in queue:
            await send(msg)

    async with SmtpPool(opts) as pool:
        started = time.perf_counter()
        await asyncio.gather(*(worker(pool) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(messages) / elapsed


async def run_raw(
    port: int, messages: list[ComposedMail], connections: int, concurrency: int
) -> float:
    # `concurrency` is ignored: raw aiosmtplib has exactly one sender per connection.
    clients = [
        aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, local_hostname=EHLO_NAME)
        for _ in range(connections)
    ]
    shares = [messages[i::connections] for i in range(connections)]

    async def send_share(client: aiosmtplib.SMTP, share: list[ComposedMail]) -> None:
        for msg in share:
            # The same bytes the notifier's pool sends, the same way (no flattening).
            await client.sendmail(msg.sender, [msg.recipient], msg.data)

    try:
        # Connecting is inside the timed part, as the pool's lazy connects are.
        started = time.perf_counter()
        await asyncio.gather(*(c.connect() for c in clients))
        await asyncio.gather(*(send_share(c, s) for c, s in zip(clients, shares, strict=True)))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.quit() for c in clients), return_exceptions=True)
        for c in clients:
            c.close()
    return len(messages) / elapsed


@dataclass
class Side:
    name: str
    rates: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)  # microseconds per message
    sink_cpu: list[float] = field(default_factory=list)

    def summary(self) -> str:
        line = f"{self.name:<15}: {statistics.median(self.rates):8.0f} msg/s (median of "
        line += ", ".join(f"{r:.0f}" for r in self.rates) + ")"
        line += f"; CPU/msg client {statistics.median(self.client_cpu):.0f} us"
        if self.sink_cpu:
            line += f", sink {statistics.median(self.sink_cpu):.0f} us"
        return line


async def _measure(side: Side, run: Awaitable[float], sink: SinkHandle, count: int) -> None:
    """One timed round: its rate, and the CPU each message cost the client and the sink."""
    cpu0, sink0 = time.process_time(), sink.cpu()
    side.rates.append(await run)
    cpu1, sink1 = time.process_time(), sink.cpu()
    side.client_cpu.append((cpu1 - cpu0) / count * 1e6)
    if sink0 is not None and sink1 is not None:
        side.sink_cpu.append((sink1 - sink0) / count * 1e6)


async def main_async(args: argparse.Namespace) -> int:
    sink = SinkHandle(in_process=args.in_process_sink)
    concurrency = args.concurrency or args.connections
    if args.dkim == "compare":
        return await compare_dkim(args, sink, concurrency)
    runners = {"pool": run_pool, "raw": run_raw}
    sides = {"pool": Side("SmtpPool"), "raw": Side("raw aiosmtplib")}
    try:
        messages = _messages(args.messages)
        # The composed messages live for the whole run; without freezing them every GC
        # pass of the send loops would walk them all (a bench artifact, same for both).
        gc.collect()
        gc.freeze()
        # Warm up both paths (imports, first connections, CPU caches).
        for runner in runners.values():
            await runner(sink.port, messages[:200], args.connections, concurrency)
        expected = sink.count()
        for r in range(args.rounds):
            for name in ("pool", "raw") if r % 2 == 0 else ("raw", "pool"):
                run = runners[name](sink.port, messages, args.connections, concurrency)
                await _measure(sides[name], run, sink, len(messages))
                expected += len(messages)
        received = sink.count()
    finally:
        sink.stop()

    pool, raw = sides["pool"], sides["raw"]
    pool_rate, raw_rate = statistics.median(pool.rates), statistics.median(raw.rates)
    where = "same process (thread)" if args.in_process_sink else "separate process"
    print(
        f"messages={args.messages} connections={args.connections} "
        f"pool senders={concurrency} rounds={args.rounds} sink={where} cpus={os.cpu_count()}"
    )
    print(pool.summary())
    print(raw.summary())
    print(
        f"SmtpPool {pool_rate:,.0f} msg/s, floor raw aiosmtplib {raw_rate:,.0f} msg/s "
        f"({args.connections} connections, same messages), ratio {pool_rate / raw_rate:.1%} "
        "(target >= 70%)"
    )
    if received != expected:
        print(f"sink received {received} messages, expected {expected}", file=sys.stderr)
        return 1
    ok = pool_rate >= 500 and pool_rate >= 0.7 * raw_rate
    print("targets (>= 500 msg/s, >= 70% of raw): " + ("met" if ok else "NOT met"))
    return 0 if ok else 2


def _signer(kind: str, folder: Path) -> DkimSigner:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = folder / f"{kind}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key = load_dkim_key(
        SmtpSettings(
            dkim_domain="praktijk.example", dkim_selector="bench", dkim_private_key_file=str(path)
        )
    )
    assert key is not None
    return DkimSigner(key)


async def compare_dkim(args: argparse.Namespace, sink: SinkHandle, concurrency: int) -> int:
    """SmtpPool unsigned, rsa-sha256 and ed25519-sha256: msg/s and client CPU per message."""
    with tempfile.TemporaryDirectory() as folder:
        signers: dict[str, DkimSigner | None] = {
            "off": None,
            "rsa": _signer("rsa", Path(folder)),
            "ed25519": _signer("ed25519", Path(folder)),
        }
    sides = {
        "off": Side("DKIM off"),
        "rsa": Side("DKIM rsa-sha256"),
        "ed25519": Side("DKIM ed25519"),
    }
    order = list(sides)
    try:
        messages = _messages(args.messages)
        gc.collect()
        gc.freeze()
        for signer in signers.values():
            await run_pool(sink.port, messages[:200], args.connections, concurrency, signer)
        expected = sink.count()
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                run = run_pool(sink.port, messages, args.connections, concurrency, signers[name])
                await _measure(sides[name], run, sink, len(messages))
                expected += len(messages)
        received = sink.count()
    finally:
        sink.stop()
    print(
        f"messages={args.messages} connections={args.connections} pool senders={concurrency} "
        f"rounds={args.rounds} cpus={os.cpu_count()} (SmtpPool, DKIM relaxed/relaxed)"
    )
    base = statistics.median(sides["off"].rates)
    for side in sides.values():
        print(side.summary() + f"; {statistics.median(side.rates) / base:.0%} of unsigned")
    if received != expected:
        print(f"sink received {received} messages, expected {expected}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="concurrent senders sharing the pool (default: one per connection, like raw)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--dkim",
        choices=["off", "compare"],
        default="off",
        help="compare: SmtpPool unsigned against DKIM rsa-sha256 and ed25519-sha256",
    )
    parser.add_argument(
        "--in-process-sink",
        action="store_true",
        help="run the sink in a thread of this process instead of a child process",
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
