"""The fault suite at full size: prints one line per scenario for the README.

    .venv/bin/python bench/faults.py [--appointments 400] [--practices 6] [--only kill-9]

Starts its own local broker (the broker-restart scenario kills and restarts it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.faults import SCENARIOS, run_scenario
from devkit.local_kafka import LocalKafka


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--practices", type=int, default=6)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--appointments", type=int, default=400, help="per practice")
    parser.add_argument("--lead", type=float, nargs=2, default=(20.0, 90.0))
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--timeout", type=float, default=420.0)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="faults-"))
    broker = LocalKafka(out / "kafka")
    bootstrap = await asyncio.to_thread(broker.start)
    ok = True
    try:
        print(f"workload: {args.practices} practices x {args.appointments} appointments")
        for name in args.only or list(SCENARIOS):
            report = await run_scenario(
                name,
                bootstrap=broker.bootstrap or bootstrap,
                broker=broker,
                out_dir=out,
                practices=args.practices,
                patients=args.patients,
                appointments=args.appointments,
                lead=tuple(args.lead),  # type: ignore[arg-type]
                timeout=args.timeout,
            )
            print(report.line(), flush=True)
            for note in report.notes + report.crashes + report.leaks:
                print(f"    {note}")
            ok = ok and report.ok
    finally:
        await asyncio.to_thread(broker.stop)
    print(f"logs in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
