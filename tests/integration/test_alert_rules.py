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

EXPIRY_ALERTS = [
    "CertificateExpiresWithin30Days",
    "CertificateExpiresWithin7Days",
    "CertificateExpiresWithin1Day",
    "CertificateExpired",
]


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


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` runs every test file in alerts/tests and all of them succeed."""
    assert RULE_TESTS, "no promtool test files in alerts/tests"
    result = run(promtool(), "test", "rules", *(p.relative_to(REPO) for p in RULE_TESTS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAILED" not in output, output
    assert output.count("Unit Testing:") == len(RULE_TESTS), output
    assert output.count("SUCCESS") == len(RULE_TESTS), output


def test_every_alert_is_unit_tested() -> None:
    """Every alert of the rules file appears, firing, in some promtool test case."""
    yaml = pytest.importorskip("yaml")
    firing: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    assert alerts <= firing, f"alerts never shown firing: {sorted(alerts - firing)}"


def test_every_rule_has_severity_summary_and_description() -> None:
    """Each alert has a warning/critical severity, a summary and a description using its labels."""
    for rule in load_rules():
        name = rule["alert"]
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        if not rule["expr"].lstrip().startswith("absent("):  # absent() has no labels to show
            assert "$labels." in annotations["description"], name


def test_expiry_bands_do_not_overlap() -> None:
    """The four expiry alerts are bounded by 30 d / 7 d / 1 d / 0 on the listener metric."""
    rules = {rule.get("alert"): rule for rule in load_rules()}
    bounds = {
        "CertificateExpiresWithin30Days": ("30 * 86400", "7 * 86400"),
        "CertificateExpiresWithin7Days": ("7 * 86400", "1 * 86400"),
        "CertificateExpiresWithin1Day": ("1 * 86400", "0"),
    }
    for name in EXPIRY_ALERTS:
        expr = " ".join(rules[name]["expr"].split())
        assert "certwatch_listener_certificate_not_after_timestamp_seconds" in expr, name
        if name in bounds:
            upper, lower = bounds[name]
            assert f"<= {upper}" in expr and f") > {lower}" in expr, expr
        else:
            assert expr.endswith(">= 0"), expr


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
