"""deploy/monitoring/: the Grafana dashboard and the Prometheus alert rules are valid PromQL and
name only series the processes export (``services/common/metrics.py``), so a renamed metric
breaks this test instead of a dashboard nobody looks at until an outage."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

import services.common.metrics  # noqa: F401 - registers every metric

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
# Series Prometheus itself adds to every target.
SCRAPE_SERIES = {"up"}
# Grafana's variables, replaced before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "zaqar"}


def exported_series() -> set[str]:
    """Every sample name the processes can export, including labelled series with no child
    yet (a counter's ``_total``, a histogram's ``_bucket``, ``_count`` and ``_sum``)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                    "summary": ("_count", "_sum", "")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    return names


def vector_selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    """The series selectors of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    for attribute in ("lhs", "rhs", "expr", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from vector_selectors(child)
    for child in getattr(node, "args", None) or []:
        yield from vector_selectors(child)


def selectors(node: Any) -> Iterator[str]:
    """The metric names a parsed PromQL expression selects."""
    return (selector.name for selector in vector_selectors(node))


def parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


# The group of rules, and the panels (by the start of their title), on Envoy's series (the
# edge pods'): tests/e2e/test_envoy.py checks their names against what the Envoy the tests
# run exports.
EDGE_GROUP = "zaqar-grpc-edge"
EDGE_PANELS = "gRPC edge (Envoy)"


def rules(group: str | None = None) -> list[dict[str, Any]]:
    """The alert rules, each with the name of its group; those of ``group`` only if given."""
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [{**rule, "group": g["name"]} for g in groups for rule in g["rules"]
            if group in (None, g["name"])]


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_is_valid_and_names_exported_series(rule: dict[str, Any]) -> None:
    names = set(selectors(parse(rule["expr"])))
    assert names, rule["alert"]
    if rule["group"] == EDGE_GROUP:
        assert all(name.startswith("envoy_") for name in names), names
    else:
        assert names <= exported_series() | SCRAPE_SERIES, names - exported_series()
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]


def test_alert_names_are_unique_and_documented() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert [name for name in names if f"`{name}`" not in operations] == []


@pytest.mark.parametrize("query", panel_queries(), ids=lambda query: query[0])
def test_every_dashboard_query_is_valid_and_names_exported_series(
    query: tuple[str, str],
) -> None:
    names = set(selectors(parse(query[1])))
    assert names, query
    if query[0].startswith(EDGE_PANELS):
        assert all(name.startswith("envoy_") for name in names), names
    else:
        assert names <= exported_series(), names - exported_series()


def test_every_exported_metric_of_ours_is_on_the_dashboard() -> None:
    shown = {name for _, expr in panel_queries() for name in selectors(parse(expr))}
    ours = {family.name for family in REGISTRY.collect()
            if family.name.startswith(("zaqar_", "grpc_"))}
    missing = [name for name in sorted(ours)
               if not any(series.startswith(name) for series in shown)]
    assert missing == []
