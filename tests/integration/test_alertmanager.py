"""alerts/alertmanager.yml on a real Alertmanager: a severity that rises is one page, never a
resolve followed by a new alert."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest_monitoring import HttpReceiver
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "alerts" / "alertmanager.yml"
DEADLINE = 20.0


def _tool(*names: str) -> str:
    """The first of `names` on PATH; skip (or fail under CERTWATCH_TEST_REQUIRE_TOOLS=1)."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CERTWATCH_TEST_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{names[0]} is not installed and CERTWATCH_TEST_REQUIRE_TOOLS=1")
    pytest.skip(f"{names[0]} is not installed")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, HttpReceiver]]:
    """A real Alertmanager running the shipped file, its receiver pointed at a local webhook
    and its waits shortened; yields its URL and the webhook."""
    binary = _tool("prometheus-alertmanager", "alertmanager")
    config = yaml.safe_load(CONFIG.read_text())
    with HttpReceiver() as hook:
        config["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{hook.port}/"
        config["route"].update(group_wait="1s", group_interval="1s")
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _until(lambda: _get(f"{url}/-/ready") is not None, "Alertmanager ready")
            yield url, hook
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _get(url: str) -> Any:
    """GET a JSON (or any) answer; None while the server is not up."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            body = answer.read()
    except OSError:
        return None
    return json.loads(body) if body.startswith((b"[", b"{")) else body


def _post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    """Send alerts as Prometheus does (POST /api/v2/alerts)."""
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", json.dumps(alerts).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def _until(check: Any, what: str) -> None:
    """Wait (bounded) until `check()` is true."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _alert(severity: str, summary: str) -> dict[str, Any]:
    """CertwatchCertificateExpiring for crt-b as Prometheus sends it (firing for 10 min)."""
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    return {
        "labels": {
            "alertname": "CertwatchCertificateExpiring", "severity": severity,
            "certificate_id": "crt-b", "common_name": "b.example.com",
        },
        "annotations": {"summary": summary},
        "endsAt": ends.isoformat(),
    }


def test_config_is_valid() -> None:
    """`amtool check-config` accepts the shipped file."""
    amtool = _tool("amtool")
    done = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_thirty_to_seven_days_is_one_page_that_turns_critical(
    alertmanager: tuple[str, HttpReceiver],
) -> None:
    """The warning fires; when the critical one joins it (as the rules do at 7 days), the
    receiver gets the critical alert, the warning is muted, and nothing is ever resolved."""
    url, hook = alertmanager
    warning = _alert("warning", "Certificate b.example.com expires within 30 days")
    _post_alerts(url, [warning])
    _until(lambda: len(hook.delivered) >= 1, "the warning page")
    first = hook.delivered[0]
    assert [a["labels"]["severity"] for a in first["alerts"]] == ["warning"]
    critical = _alert("critical", "Certificate b.example.com expires within 7 days")
    _post_alerts(url, [warning, critical])

    def critical_paged() -> bool:
        return any(
            a["labels"]["severity"] == "critical" for p in hook.delivered for a in p["alerts"]
        )

    _until(critical_paged, "the critical page")
    time.sleep(2.5)  # two more group intervals: anything else would have been sent by now
    seen = [
        (a["labels"]["severity"], a["status"]) for p in hook.delivered for a in p["alerts"]
    ]
    assert ("warning", "resolved") not in seen
    assert all(status == "firing" for _, status in seen)
    later = [p for p in hook.delivered if any(
        a["labels"]["severity"] == "critical" for a in p["alerts"])]
    assert [a["labels"]["severity"] for a in later[-1]["alerts"]] == ["critical"]
    states = {
        a["labels"]["severity"]: a["status"]["state"] for a in _get(f"{url}/api/v2/alerts")
    }
    assert states == {"warning": "suppressed", "critical": "active"}
