"""The follow-up charts as SVG, drawn on the server with pygal; they read without JavaScript.

pygal's optional tooltip script is left out (``js=[]``) and its inline config script
stripped, so a chart loads nothing and runs nothing: serve it as ``image/svg+xml`` (for
``<img src>``) or inline. Titles and legends are Dutch, like the page.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

from services.common.followup._figures import Report

# pygal puts a legacy import hook (for its map plugins, unused here) on sys.meta_path,
# which makes every later import warn (ImportWarning) on Python 3.11+: quiet while pygal
# loads, then take the hook off again.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ImportWarning)
    import pygal
    from pygal.style import Style
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

__all__ = ["CHARTS", "chart_svg", "report_charts"]

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)
_STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#52606d",
    colors=("#1a6e5c", "#c05621", "#2b6cb0", "#718096"),
    font_family="sans-serif",
)

# name -> Dutch title
CHARTS: dict[str, str] = {
    "bereik": "Bereik: afspraken met een verstuurde herinnering (%)",
    "no-show": "Niet verschenen (%), met en zonder herinnering",
    "verstuurd": "Herinneringen per week",
}


def _percent(count: int, base: int | None) -> float | None:
    if not base:
        return None
    return round(100 * count / base, 1)


def _chart(kind: Any, title: str, labels: list[str]) -> Any:
    chart = kind(
        js=[],
        disable_xml_declaration=True,
        style=_STYLE,
        width=720,
        height=320,
        title=title,
        x_label_rotation=30,
        legend_at_bottom=True,
        # Without the tooltip script, the values are printed on the bars.
        print_values=True,
        show_y_guides=True,
        explicit_size=True,
    )
    chart.x_labels = labels
    return chart


def chart_svg(report: Report, name: str) -> str:
    """One chart of the report (``bereik``, ``no-show`` or ``verstuurd``) as SVG text."""
    weeks = report.weeks
    labels = [w.split("-")[1] for w in weeks]
    if name == "bereik":
        chart = _chart(pygal.Bar, CHARTS[name], labels)
        values = []
        for w in weeks:
            f = report.value(w, "reach")
            values.append(_percent(f.count, f.base) if f else None)
        chart.add("bereik", values)
    elif name == "no-show":
        chart = _chart(pygal.Bar, CHARTS[name], labels)
        for measure, label in (
            ("noshow_reminded", "met herinnering"),
            ("noshow_not_reminded", "zonder herinnering"),
        ):
            values = []
            for w in weeks:
                f = report.value(w, measure, "all")
                values.append(_percent(f.count, f.base) if f else None)
            chart.add(label, values)
    elif name == "verstuurd":
        chart = _chart(pygal.StackedBar, CHARTS[name], labels)
        for measure, key, label in (
            ("sent", "email", "e-mail"),
            ("sent", "push", "push"),
            ("suppressed", None, "niet verstuurd"),
            ("failed", None, "mislukt"),
        ):
            values = []
            for w in weeks:
                total = sum(
                    f.count
                    for f in report.figures
                    if f.week == w and f.measure == measure and (key is None or f.key == key)
                )
                values.append(total)
            chart.add(label, values)
    else:
        raise KeyError(f"no chart {name!r}; known: {', '.join(CHARTS)}")
    svg = str(chart.render(is_unicode=True))
    return _SCRIPT.sub("", svg)


def report_charts(report: Report) -> dict[str, str]:
    """Every chart, by name."""
    return {name: chart_svg(report, name) for name in CHARTS}
