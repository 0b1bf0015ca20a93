"""The report as CSV and as text: the same figures, one line per figure."""

from __future__ import annotations

import csv
import io

from services.common.followup._figures import CAUTION, Figure, Report

__all__ = ["CSV_COLUMNS", "report_csv", "report_text"]

CSV_COLUMNS = ("practice_id", "week", "measure", "key", "count", "base", "rate")


def _rate(figure: Figure) -> str:
    rate = figure.rate
    return "" if rate is None else f"{rate:.4f}"


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in report.figures:
        writer.writerow(
            [
                report.practice_id,
                f.week,
                f.measure,
                f.key,
                f.count,
                "" if f.base is None else f.base,
                _rate(f),
            ]
        )
    return out.getvalue()


def _share(figure: Figure | None) -> str:
    if figure is None or figure.base is None:
        return "-"
    if not figure.base:
        return "0/0"
    return f"{figure.count}/{figure.base} {100 * figure.count / figure.base:.0f}%"


def _total(report: Report, week: str, measure: str) -> int:
    return sum(
        f.count
        for f in report.figures
        if f.week == week and f.measure == measure and not f.key.startswith("via:")
    )


def report_text(report: Report) -> str:
    """A summary line per week, then every figure, so the text holds the CSV's numbers."""
    lines = [
        f"Follow-up for practice {report.practice_id}: ISO weeks {report.weeks[0]} to "
        f"{report.weeks[-1]} (Europe/Amsterdam)",
        CAUTION,
        "",
        f"{'week':<9} {'appts':>6} {'sent':>6} {'suppr':>6} {'failed':>6} "
        f"{'reach':>13} {'no-show reminded':>17} {'not reminded':>14} {'cancel after':>13}",
    ]
    for week in report.weeks:
        cancelled = report.value(week, "cancelled_after_reminder", "all")
        appointments = report.value(week, "appointments")
        lines.append(
            f"{week:<9} {appointments.count if appointments else 0:>6} "
            f"{_total(report, week, 'sent'):>6} {_total(report, week, 'suppressed'):>6} "
            f"{_total(report, week, 'failed'):>6} "
            f"{_share(report.value(week, 'reach')):>13} "
            f"{_share(report.value(week, 'noshow_reminded', 'all')):>17} "
            f"{_share(report.value(week, 'noshow_not_reminded', 'all')):>14} "
            f"{cancelled.count if cancelled else 0:>13}"
        )
    lines += ["", "All figures (count, or count/base for a rate):"]
    for f in report.figures:
        if f.measure == "appointments":
            continue
        value = str(f.count) if f.base is None else _share(f)
        lines.append(f"  {f.week}  {f.measure:<26} {f.key:<20} {value}")
    return "\n".join(lines) + "\n"
