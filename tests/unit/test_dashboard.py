"""The Grafana dashboard and the alert rules query only the metrics of SPEC §6."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "certwatch.json"
RULES = REPO / "alerts" / "certwatch.rules.yml"

# SPEC §6, name -> type. The single source of truth for the tests below.
SPEC_METRICS: dict[str, str] = {
    "certwatch_certificate_not_after_timestamp_seconds": "gauge",
    "certwatch_chain_certificate_not_after_timestamp_seconds": "gauge",
    "certwatch_certificate_not_before_timestamp_seconds": "gauge",
    "certwatch_listener_certificate_not_after_timestamp_seconds": "gauge",
    "certwatch_probe_success": "gauge",
    "certwatch_probe_certificate_not_after_timestamp_seconds": "gauge",
    "certwatch_probe_chain_complete": "gauge",
    "certwatch_probe_matches_configured": "gauge",
    "certwatch_scan_last_success_timestamp_seconds": "gauge",
    "certwatch_scan_duration_seconds": "histogram",
    "certwatch_alerts_sent_total": "counter",
    "certwatch_alert_delivery_failures_total": "counter",
    "certwatch_rotations_total": "counter",
    "certwatch_offload_connections_active": "gauge",
    "certwatch_offload_connections_total": "counter",
    "certwatch_offload_handshake_failures_total": "counter",
    "certwatch_offload_bytes_total": "counter",
    "certwatch_offload_handshake_duration_seconds": "histogram",
    "certwatch_probe_timestamp_seconds": "gauge",
    "certwatch_certificate_info": "gauge",
    "certwatch_certificate_revoked": "gauge",
    "certwatch_certificate_alert_threshold_seconds": "gauge",
    "certwatch_certificate_renewal_timestamp_seconds": "gauge",
    "certwatch_acme_orders_total": "counter",
    "certwatch_offload_backend_up": "gauge",
    "certwatch_offload_tls_resumptions_total": "counter",
    "certwatch_build_info": "gauge",
}

# Series Prometheus itself writes, which alert rules may read (never the dashboard):
# ALERTS lets a probe alert stay firing while the latest result is still bad.
PROMETHEUS_BUILTIN_SERIES = frozenset({"ALERTS"})

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

PROMQL_FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv exp floor histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta
    increase irate label_join label_replace last_over_time ln log10 log2 max_over_time
    min_over_time minute month pi predict_linear present_over_time quantile_over_time rad rate
    resets round scalar sgn sin sinh sort sort_desc sqrt stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year
    """.split()
)
PROMQL_AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile".split()
)
PROMQL_KEYWORDS = frozenset(
    "by without on ignoring group_left group_right and or unless offset bool atan2 inf nan".split()
)

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier that is not part of a number/duration (1e3, 5m), a $variable or a longer name.
_IDENT = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(\s*\()?")


def allowed_series_names() -> set[str]:
    """Every series name prometheus_client exposes for the SPEC §6 metrics."""
    names: set[str] = set()
    for name, kind in SPEC_METRICS.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return names


def promql_identifiers(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) used in a PromQL expression."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGES.sub("[]", text)
    text = _LABEL_LIST.sub(r"\1", text)
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if call or word in PROMQL_AGGREGATIONS:
            functions.add(word)
        else:
            metrics.add(word)
    return metrics, functions


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel."""
    out: list[tuple[str, str]] = []
    for panel in iter_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def rules_exprs() -> list[tuple[str, str]]:
    """(alert or record name, expr) for every rule of the rules file."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    out: list[tuple[str, str]] = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            out.append((rule.get("alert") or rule["record"], rule["expr"]))
    return out


def test_extractor_finds_metrics_not_functions_labels_or_variables() -> None:
    """The metric-name extractor sees through functions, label lists, matchers and variables."""
    expr = (
        'histogram_quantile(0.95, sum by (le, listener_id) (rate(a_bucket{listener_id=~"$l",'
        ' x="y(z)"}[$__rate_interval] offset 5m))) / on (job) group_left (role) b'
        " - time() > 1e3 and c unless absent(d) or max_over_time(e[10m]) == bool 0"
    )
    metrics, functions = promql_identifiers(expr)
    assert metrics == {"a_bucket", "b", "c", "d", "e"}
    assert functions == {"histogram_quantile", "sum", "rate", "time", "absent", "max_over_time"}


def test_dashboard_queries_use_only_spec_metrics() -> None:
    """Every panel query names at least one metric, and only SPEC §6 metrics."""
    allowed = allowed_series_names()
    exprs = dashboard_exprs()
    assert exprs
    for title, expr in exprs:
        metrics, functions = promql_identifiers(expr)
        assert metrics, f"{title}: no metric in {expr!r}"
        assert metrics <= allowed, f"{title}: not in SPEC §6: {sorted(metrics - allowed)}"
        unknown = functions - PROMQL_FUNCTIONS - PROMQL_AGGREGATIONS
        assert not unknown, f"{title}: unknown PromQL functions {sorted(unknown)}"


def test_dashboard_variable_queries_use_only_spec_metrics() -> None:
    """Template-variable queries (label_values) use only SPEC §6 metrics."""
    allowed = allowed_series_names()
    for var in load_dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", query)
        assert match, f"unexpected variable query {query!r}"
        assert match.group(1) in allowed


def test_every_certwatch_name_in_dashboard_and_rules_is_a_spec_metric() -> None:
    """No certwatch_* name anywhere in the dashboard or rules file (text included) is off-spec."""
    allowed = allowed_series_names() | set(SPEC_METRICS)
    for path in (DASHBOARD, RULES):
        names = set(re.findall(r"\bcertwatch_\w+", path.read_text(encoding="utf-8")))
        assert names, path
        assert names <= allowed, f"{path.name}: not in SPEC §6: {sorted(names - allowed)}"


def test_rules_use_only_spec_metrics() -> None:
    """Every metric in every alert rule expression is a SPEC §6 name (or Prometheus' ALERTS)."""
    allowed = allowed_series_names() | PROMETHEUS_BUILTIN_SERIES
    exprs = rules_exprs()
    assert exprs
    for name, expr in exprs:
        metrics, _ = promql_identifiers(expr)
        assert metrics, f"{name}: no metric in {expr!r}"
        assert metrics <= allowed, f"{name}: not in SPEC §6: {sorted(metrics - allowed)}"


def test_required_panels_exist() -> None:
    """The dashboard has every panel the brief asks for, each with at least one query."""
    panels = {p["title"]: p for p in iter_panels(load_dashboard()["panels"])}
    required = [
        "Certificates by days left",
        "Expiry timeline",
        "Probes failing",
        "Chains incomplete",
        "Drift (served ≠ configured)",
        "Rotations",
        "Alerts sent and failed",
        "Proxy connections (active)",
        "Proxy connections (rate)",
        "Handshake failures by reason",
        "Throughput (bytes in/out)",
        "Handshake latency",
    ]
    for title in required:
        assert title in panels, f"missing panel {title!r}"
        assert panels[title].get("targets"), f"panel {title!r} has no query"
    assert panels["Certificates by days left"]["type"] == "table"


def test_panels_query_the_metrics_they_show() -> None:
    """Key panels query the metric they are about (e.g. latency uses the handshake histogram)."""
    by_title: dict[str, set[str]] = {}
    for title, expr in dashboard_exprs():
        by_title.setdefault(title, set()).update(promql_identifiers(expr)[0])
    expected = {
        "Certificates by days left": "certwatch_listener_certificate_not_after_timestamp_seconds",
        "Expiry timeline": "certwatch_listener_certificate_not_after_timestamp_seconds",
        "Probes failing": "certwatch_probe_success",
        "Chains incomplete": "certwatch_probe_chain_complete",
        "Drift (served ≠ configured)": "certwatch_probe_matches_configured",
        "Rotations": "certwatch_rotations_total",
        "Proxy connections (active)": "certwatch_offload_connections_active",
        "Proxy connections (rate)": "certwatch_offload_connections_total",
        "Handshake failures by reason": "certwatch_offload_handshake_failures_total",
        "Throughput (bytes in/out)": "certwatch_offload_bytes_total",
        "Handshake latency": "certwatch_offload_handshake_duration_seconds_bucket",
    }
    for title, metric in expected.items():
        assert metric in by_title[title], f"{title}: does not query {metric}"
    assert {
        "certwatch_alerts_sent_total",
        "certwatch_alert_delivery_failures_total",
    } <= by_title["Alerts sent and failed"]


def test_table_is_sorted_worst_first() -> None:
    """The days-left table sorts ascending (fewest days left first)."""
    panels = {p["title"]: p for p in iter_panels(load_dashboard()["panels"])}
    table = panels["Certificates by days left"]
    assert table["options"]["sortBy"] == [{"displayName": "Days left", "desc": False}]
    assert table["targets"][0]["expr"].startswith("sort(")


def test_datasource_is_a_variable() -> None:
    """The datasource is a templating variable of type datasource used by every panel and query."""
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for panel in iter_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panel_ids_are_unique() -> None:
    """Panel ids are unique and every non-row panel has a grid position."""
    panels = list(iter_panels(load_dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
