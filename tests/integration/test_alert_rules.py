"""The alert rules in alerts/ pass `promtool check rules` and their `promtool test rules` tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "certwatch.rules.yml"
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
DASHBOARD = REPO / "grafana" / "certwatch.json"

RUNBOOK = REPO / "alerts" / "RUNBOOK.md"
RUNBOOK_BASE = "https://github.com/certwatch/certwatch/blob/main/alerts/RUNBOOK.md#"
NODE_LABELS = "without (instance, job, node"
# Alerts about certwatch as a whole, whose series carry no label.
GLOBAL_ALERTS = {"CertwatchScanStale", "CertwatchScanMetricAbsent", "CertwatchAcmeOrdersFailing"}


def promtool() -> str:
    """Path of promtool; skip (or fail with CERTWATCH_TEST_REQUIRE_TOOLS=1) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CERTWATCH_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail("promtool is not installed and CERTWATCH_TEST_REQUIRE_TOOLS=1")
        pytest.skip("promtool is not installed")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository root, capturing its output."""
    return subprocess.run(
        [str(a) for a in args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the rules file."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_check_rules() -> None:
    """`promtool check rules` accepts the rules file and finds every rule."""
    result = run(promtool(), "check", "rules", RULES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(load_rules())} rules found" in output, output
    assert "WARNING" not in output.upper(), output


def test_there_are_rule_unit_tests() -> None:
    """alerts/tests holds promtool test files."""
    assert RULE_TESTS, "no promtool test files in alerts/tests"


@pytest.mark.parametrize("tests", RULE_TESTS, ids=[p.stem for p in RULE_TESTS])
def test_rule_unit_tests_pass(tests: Path) -> None:
    """`promtool test rules` runs this test file of alerts/tests and it succeeds (one file per
    test, so the slow ones run side by side)."""
    result = run(promtool(), "test", "rules", tests.relative_to(REPO))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAILED" not in output, output
    assert output.count("Unit Testing:") == 1 and output.count("SUCCESS") == 1, output


def test_every_alert_is_unit_tested() -> None:
    """Every (alert, severity) of the rules file appears, firing, in some promtool test case."""
    yaml = pytest.importorskip("yaml")
    firing: set[tuple[str, str]] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    firing.add((check["alertname"], alert["exp_labels"]["severity"]))
    rules = {(rule["alert"], rule["labels"]["severity"]) for rule in load_rules()}
    assert rules <= firing, f"alerts never shown firing: {sorted(rules - firing)}"


def test_rule_names_start_with_certwatch() -> None:
    """Every rule is an alert whose name starts with Certwatch (SPEC §6)."""
    for rule in load_rules():
        assert "alert" in rule, rule
        assert re.fullmatch(r"Certwatch[A-Z]\w+", rule["alert"]), rule["alert"]


def test_every_rule_has_severity_summary_description_and_runbook() -> None:
    """Each alert has a warning/critical severity, summary, description and runbook_url."""
    for rule in load_rules():
        name = rule["alert"]
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"].startswith(RUNBOOK_BASE), name
        if name in GLOBAL_ALERTS:  # one series without labels: show the value
            assert rule["expr"].lstrip().startswith("absent(") or "$value" in annotations[
                "description"
            ], name
        else:
            assert "$labels." in annotations["description"], name


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, - for spaces."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_github_anchor_matches_githubs_rules() -> None:
    """The anchor helper drops punctuation, lowers case and turns spaces into dashes."""
    assert github_anchor("CertwatchScanStale") == "certwatchscanstale"
    assert github_anchor("What to check (first!)") == "what-to-check-first"


def test_every_runbook_url_anchor_is_a_runbook_heading() -> None:
    """Every runbook_url's anchor is a heading of alerts/RUNBOOK.md, and each alert has its own."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    anchors = {github_anchor(h) for h in headings}
    for rule in load_rules():
        url = rule["annotations"]["runbook_url"]
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in RUNBOOK.md"
        assert anchor == github_anchor(rule["alert"]), f"{rule['alert']}: anchor {anchor}"
    sections = {github_anchor(h) for h in headings[1:]}
    assert sections == {github_anchor(rule["alert"]) for rule in load_rules()}


def test_every_rule_aggregates_away_the_node() -> None:
    """Every expression aggregates instance/job/node away, so several nodes page once."""
    for rule in load_rules():
        expr = " ".join(rule["expr"].split())
        if expr.startswith("absent("):  # one series for all nodes by construction
            continue
        assert NODE_LABELS in expr, rule["alert"]
        assert "by (job)" not in expr and "by (instance)" not in expr, rule["alert"]


def test_rising_severity_rules_hand_over_in_one_evaluation() -> None:
    """A name with two rules has a warning and a critical rule, no `for:`, no other label."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in load_rules():
        by_name.setdefault(rule["alert"], []).append(rule)
    rising = {name: rules for name, rules in by_name.items() if len(rules) > 1}
    assert {
        "CertwatchCertificateExpiring",
        "CertwatchChainCertificateExpiring",
        "CertwatchTargetCertificateExpiring",
        "CertwatchBackendDown",
    } <= set(rising)
    for name, rules in rising.items():
        assert sorted(r["labels"]["severity"] for r in rules) == ["critical", "warning"], name
        assert all(set(r["labels"]) == {"severity"} for r in rules), name
        assert all("for" not in r for r in rules), name


def test_expiry_thresholds_come_from_the_threshold_metric() -> None:
    """The certificate and chain expiry rules compare against the per-certificate thresholds."""
    for rule in load_rules():
        if rule["alert"] in {"CertwatchCertificateExpiring", "CertwatchChainCertificateExpiring"}:
            assert "certwatch_certificate_alert_threshold_seconds" in rule["expr"], rule["alert"]
            assert "86400" not in rule["expr"], rule["alert"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL (checked by promtool as recording rules)."""
    tool = promtool()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        # Grafana variables replaced by values Prometheus would receive.
        expr = re.sub(r"\$__rate_interval|\$__interval|\$__range", "5m", expr)
        expr = expr.replace("$listener", ".*")
        lines += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    rules_file = tmp_path / "dashboard-queries.rules.yml"
    rules_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(tool, "check", "rules", rules_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
