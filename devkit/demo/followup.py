"""The demo's follow-up step: the HIS's final statuses, insights, and the report.

After the reminders went out, the synthetic HIS sends what happened (fulfilled, noshow,
some cancellations by patients); ``reminders run insights`` projects outcomes and
appointments into an SQLite database in the demo's folder, and the demo prints the
report of one practice and the command that prints it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select

from devkit.demo.pipeline import Pipeline
from devkit.demo.workload import Workload
from services.common.db import create_engine, upgrade
from services.common.followup import FollowupAppointment, build_report, report_text

__all__ = ["show_follow_up"]


async def show_follow_up(
    pipeline: Pipeline,
    workload: Workload,
    out_dir: Path,
    say: Callable[[str], None],
    admin_url: str = "",
) -> list[str]:
    """Runs the step; returns problems (empty when the projection holds every status).

    insights writes to the database practice-admin reads (``admin.sqlite3``), so the
    beheeromgeving's follow-up page shows the same figures."""
    url = f"sqlite+aiosqlite:///{out_dir / 'admin.sqlite3'}"
    engine = create_engine(url)
    try:
        await upgrade(engine)
        await pipeline.publish_events(workload.final_events)
        # Already running beside practice-admin (its verzendlog reads the projection);
        # started here when the demo runs without the beheeromgeving.
        service = pipeline.start_insights(url)
        finals = workload.final_events
        t = FollowupAppointment
        done = or_(
            *(
                and_(
                    t.practice_id == e.practice_id,
                    t.appointment_id == e.appointment_id,
                    t.status == e.status,
                )
                for e in finals
            )
        )
        deadline = time.monotonic() + 90
        projected = 0
        while time.monotonic() < deadline and service.alive():
            async with engine.connect() as conn:
                projected = int(await conn.scalar(select(func.count()).where(done)) or 0)
            if projected >= len(finals):
                break
            await asyncio.sleep(1.0)
        enabled = [c.practice_id for c in workload.practices if c.reminders_enabled]
        practice = enabled[0] if enabled else workload.practices[0].practice_id
        until = max(e.start for e in finals) + timedelta(days=1) if finals else None
        async with engine.connect() as conn:
            report = (
                await build_report(conn, practice, until=until, weeks=1)
                if until is not None
                else None
            )
    finally:
        await engine.dispose()
    noshows = sum(1 for e in finals if e.status == "noshow")
    cancelled = sum(1 for e in finals if e.status == "cancelled")
    say(
        f"  follow-up    HIS sent {len(finals)} final statuses ({noshows} noshow, "
        f"{cancelled} cancelled by patients); insights projected {projected}"
    )
    if report is not None and until is not None:
        summary = report_text(report).split("\n\nAll figures")[0]
        for text in summary.splitlines():
            say(f"    {text}" if text else "")
        say(
            f"  report       REMINDERS_DATABASE__URL={url} reminders report "
            f"--practice {practice} --weeks 1 --until {until.date().isoformat()} [--csv]"
        )
    if admin_url:
        say(f"  follow-up    {admin_url}/praktijk/{practice}/follow-up (after signing in)")
        say(f"  verzendlog   {admin_url}/praktijk/{practice}/verzendlog")
    say(f"  insights     {service.metrics_url}")
    if projected < len(finals):
        return [f"insights projected {projected} of {len(finals)} final statuses"]
    return []
