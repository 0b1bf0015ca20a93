"""docs/metrics.md against what the services register and serve on /metrics."""

from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.ops.ops_support import CatalogueEntry, MetricsTarget

# Label names that would carry personal data or unbounded practice ids.
FORBIDDEN_LABEL = re.compile(
    r"practice|patient|email|mail_?address|recipient|bsn|name$|phone|endpoint|address|user"
)
_SUFFIX = {"counter": "_total", "info": "_info"}


def _fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_every_registered_metric_is_catalogued_and_every_row_exists(
    metrics_target: MetricsTarget, catalogue: dict[str, CatalogueEntry]
) -> None:
    registered = set(metrics_target.metrics)
    missing = sorted(registered - set(catalogue))
    gone = sorted(set(catalogue) - registered)
    assert not missing, f"metrics without a row in docs/metrics.md: {missing}"
    assert not gone, f"docs/metrics.md rows for metrics nobody registers: {gone}"


def test_types_labels_and_services_match(
    metrics_target: MetricsTarget, catalogue: dict[str, CatalogueEntry]
) -> None:
    problems = []
    for name, found in sorted(metrics_target.metrics.items()):
        row = catalogue.get(name)
        if row is None:
            continue
        if row.type != found["type"]:
            problems.append(f"{name}: type {row.type!r} in the catalogue, {found['type']!r} served")
        if row.labels != set(found["labels"]):
            problems.append(
                f"{name}: labels {sorted(row.labels)} in the catalogue, {found['labels']} served"
            )
        if row.service != found["service"]:
            problems.append(
                f"{name}: service {row.service!r} in the catalogue, defined by {found['service']!r}"
            )
    assert not problems, "\n".join(problems)


def test_every_row_says_what_it_means_and_what_to_do(
    catalogue: dict[str, CatalogueEntry],
) -> None:
    for row in catalogue.values():
        assert len(row.meaning) > 10, f"{row.name}: no meaning"
        assert len(row.action) > 10, f"{row.name}: no operator action"
        assert row.type in ("counter", "gauge", "histogram", "summary", "info"), row.name


def test_served_metrics_page_matches_the_catalogue(
    metrics_target: MetricsTarget, catalogue: dict[str, CatalogueEntry]
) -> None:
    status, content_type, text = _fetch(f"{metrics_target.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    families = list(text_string_to_metric_families(text))
    # prometheus_client's creation timestamps of counters and histograms, "<base>_created",
    # come out of the text parser as families of their own.
    bases = {f.name for f in families if f.type in ("counter", "histogram", "summary")}
    served = {}
    for family in families:
        if family.name.endswith("_created") and family.name.removesuffix("_created") in bases:
            continue
        served[family.name + _SUFFIX.get(family.type, "")] = family
    assert set(served) == set(catalogue), sorted(set(served) ^ set(catalogue))
    for name, family in served.items():
        assert family.type == catalogue[name].type, name
        for sample in family.samples:
            extra = set(sample.labels) - {"le", "quantile"} - catalogue[name].labels
            assert not extra, f"{name} serves labels {extra} that the catalogue does not list"


def test_no_label_can_carry_personal_data_or_a_practice(
    catalogue: dict[str, CatalogueEntry],
) -> None:
    for row in catalogue.values():
        for label in row.labels:
            assert not FORBIDDEN_LABEL.search(label) or label in ("app_name",), (
                f"{row.name} has label {label!r}: no personal data or practice ids in labels"
            )


def test_domain_metrics_are_prefixed(metrics_target: MetricsTarget) -> None:
    for name, found in metrics_target.metrics.items():
        if found["service"] != "all" or name.startswith("reminders_"):
            assert name.startswith("reminders_"), f"{name}: service metrics start with reminders_"


def test_health_endpoints(metrics_target: MetricsTarget) -> None:
    status, _, body = _fetch(f"{metrics_target.url}/healthz")
    assert status == 200 and '"alive"' in body
    status, _, body = _fetch(f"{metrics_target.url}/readyz")
    assert status == 200 and '"ready": true' in body
