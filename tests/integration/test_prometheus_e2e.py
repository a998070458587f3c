"""A real Prometheus scrapes certwatch's /metrics and evaluates alerts/certwatch.rules.yml."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwatch.app.service import Service
from tests.certfactory import make_pki
from tests.conftest import require
from tests.integration.conftest_monitoring import add_listener, make_service, upload
from tests.integration.servers import api_server
from tests.support import free_port

RULES = Path(__file__).resolve().parents[2] / "alerts" / "certwatch.rules.yml"
PROMETHEUS = shutil.which("prometheus")
DEADLINE = 25.0


def _require_prometheus() -> str:
    require(PROMETHEUS is not None, "prometheus is not installed")
    assert PROMETHEUS is not None
    return PROMETHEUS


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[tuple[str, Service, dict[str, str]]]:
    """certwatch's API (uvicorn in a thread) with a 6.5-day and a 60-day certificate in use."""
    service = make_service(tmp_path / "certwatch")
    pki = make_pki("prometheus e2e")
    soon = upload(service, pki.leaf("soon.example.com", days=6.5))
    later = upload(service, pki.leaf("later.example.com", days=60))
    add_listener(service, soon, free_port())
    add_listener(service, later, free_port())
    with api_server(service) as url:
        yield url.removeprefix("http://"), service, {"soon": soon, "later": later}
    service.close()


@pytest.fixture
def prometheus(tmp_path: Path, api_url: tuple[str, Service, dict[str, str]]) -> Iterator[str]:
    """A Prometheus on loopback scraping certwatch every second with the project's rules."""
    binary = _require_prometheus()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: certwatch\n"
        f"    static_configs:\n      - targets: ['{api_url[0]}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _api(base: str, path: str, **params: str) -> Any:
    """The `data` of a Prometheus HTTP API answer, or None while it is not up yet."""
    try:
        response = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=2)
    except httpx.TransportError:
        return None
    return response.json()["data"] if response.status_code == 200 else None


def test_prometheus_fires_7_day_alert_and_nothing_for_60_days(
    prometheus: str, api_url: tuple[str, Service, dict[str, str]]
) -> None:
    """Prometheus fires CertwatchCertificateExpiring at 6.5 days left — critical, with the
    warning still firing beside it (Alertmanager's inhibit rule mutes it) — none at 60."""
    ids = api_url[2]
    deadline = time.monotonic() + DEADLINE
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        alerts = (_api(prometheus, "alerts") or {"alerts": []})["alerts"]
        firing = [
            a for a in alerts
            if a["labels"]["alertname"] == "CertwatchCertificateExpiring" and a["state"] == "firing"
        ]
        if len(firing) >= 2:
            break
        time.sleep(0.25)
    seven = sorted(
        (a for a in alerts if a["labels"]["alertname"] == "CertwatchCertificateExpiring"),
        key=lambda a: str(a["labels"]["severity"]),
    )
    assert [(a["labels"]["severity"], a["state"]) for a in seven] == [
        ("critical", "firing"), ("warning", "firing"),
    ]
    for alert in seven:
        summary = alert["annotations"]["summary"]
        assert summary == "Certificate soon.example.com expires within 7 days"
        assert alert["labels"]["certificate_id"] == ids["soon"]
        assert alert["labels"]["common_name"] == "soon.example.com"
    expiry = {"CertwatchCertificateExpiring", "CertwatchCertificateExpired"}
    later = [
        a
        for a in alerts
        if a["labels"]["alertname"] in expiry and a["labels"].get("certificate_id") == ids["later"]
    ]
    assert later == []
    metric = "certwatch_listener_certificate_not_after_timestamp_seconds"
    query = f'{metric}{{certificate_id="{ids["later"]}"}}'
    scraped = _api(prometheus, "query", query=query)
    assert scraped is not None and len(scraped["result"]) == 1
