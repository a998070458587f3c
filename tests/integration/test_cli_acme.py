"""`certwatch request`, `renew` and `requests` against a real serve ordering from a real Pebble."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwatch.app.cli import main
from certwatch.app.service import Service
from certwatch.config import AcmeConfig, Config
from tests.integration.pebble import Pebble, serve_acme
from tests.integration.servers import ServeProcess

CLI_NAME = "cli.example.test"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `certwatch …` in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def serve(
    tmp_path_factory: pytest.TempPathFactory, pebble: Pebble
) -> Iterator[ServeProcess]:
    """One `certwatch serve` with [acme] on Pebble (http-01) for the tests of this module."""
    process = serve_acme(tmp_path_factory.mktemp("cli-acme"), pebble, "http-01")
    yield process
    assert process.stop() == 0


def _settled(
    capsys: pytest.CaptureFixture[str], url: str, request_id: str, limit: float = 60
) -> dict[str, Any]:
    """`requests show --json` once the request is no longer Pending (or after `limit`)."""
    deadline = time.monotonic() + limit
    while True:
        code, out, err = run(capsys, "--api", url, "requests", "show", request_id, "--json")
        assert code == 0, err
        request: dict[str, Any] = json.loads(out)["CertificateRequest"]
        if request["Status"] != "Pending" or time.monotonic() > deadline:
            return request
        time.sleep(0.3)


def test_request_is_pending_then_issued_and_renewed(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certwatch request NAME` answers Pending; `requests` shows it Issued with its
    certificate; `renew` places a renewal request for the same names that is Issued too."""
    url = serve.url
    code, out, err = run(capsys, "--api", url, "request", CLI_NAME, "--name", "cli", "--json")
    assert code == 0, err
    placed = json.loads(out)
    assert placed["Status"] == "Pending" and placed["CertificateRequestId"].startswith("crq-")
    issued = _settled(capsys, url, placed["CertificateRequestId"])
    assert issued["Status"] == "Issued", (issued, serve.output())
    code, out, _ = run(capsys, "--api", url, "requests")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["CertificateRequestId", "DomainNames", "Status"]
    assert any(
        row.split()[:3] == [placed["CertificateRequestId"], CLI_NAME, "Issued"] for row in rows
    ), out
    code, out, _ = run(capsys, "--api", url, "requests", "show", placed["CertificateRequestId"])
    assert code == 0 and f"CertificateId: {issued['CertificateId']}" in out.splitlines()

    code, out, err = run(capsys, "--api", url, "renew", issued["CertificateId"], "--json")
    assert code == 0, err
    renewal = _settled(capsys, url, json.loads(out)["CertificateRequestId"])
    assert renewal["Renewal"] is True and renewal["RenewsCertificateId"] == issued["CertificateId"]
    assert (renewal["Status"], renewal["DomainNames"]) == ("Issued", [CLI_NAME]), serve.output()
    code, out, _ = run(capsys, "--api", url, "requests", "--status", "Issued", "--json")
    ids = [r["CertificateRequestId"] for r in json.loads(out)["CertificateRequests"]]
    assert ids[:2] == [renewal["CertificateRequestId"], placed["CertificateRequestId"]]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["request", "not a name"], "InvalidParameter"),
        (["request", "*.wild.example.test"], "UnsupportedChallenge"),
        (["request", "a.example.test", "--listener", "lsn-0000000000000000"], "ListenerNotFound"),
        (["renew", "cert-0000000000000000"], "CertificateNotFound"),
        (["requests", "show", "crq-0000000000000000"], "CertificateRequestNotFound"),
    ],
)
def test_refusals_exit_1_with_their_code(
    serve: ServeProcess, capsys: pytest.CaptureFixture[str], argv: list[str], code: str
) -> None:
    """A bad name, a wildcard without dns-01, an unknown listener, certificate or request:
    exit 1, `Code: Message` on one stderr line, and no request kept."""

    def request_ids() -> list[str]:
        out = run(capsys, "--api", serve.url, "requests", "--json")[1]
        return [r["CertificateRequestId"] for r in json.loads(out)["CertificateRequests"]]

    before = request_ids()
    exit_code, _, err = run(capsys, "--api", serve.url, *argv)
    assert exit_code == 1
    assert err.count("\n") == 1 and err.startswith(f"{code}: "), err
    assert request_ids() == before


def test_list_certificate_requests_pages_newest_first(tmp_path: Path) -> None:
    """ListCertificateRequests pages with MaxResults/NextToken over every request, newest first,
    with TotalCount; a token it did not issue is InvalidParameter."""
    acme = AcmeConfig(directory_url="https://acme.invalid/dir", challenge="http-01")
    service = Service(Config(data_dir=str(tmp_path / "data"), acme=acme))
    try:
        placed = [
            service.call("RequestCertificate", {"DomainNames": [f"p{i}.example.test"]})
            for i in range(5)
        ]
        seen: list[str] = []
        token: str | None = None
        for _ in range(5):
            page = service.call(
                "ListCertificateRequests", {"MaxResults": 2, "NextToken": token}
            )
            assert page["TotalCount"] == 5 and len(page["CertificateRequests"]) <= 2
            seen += [r["CertificateRequestId"] for r in page["CertificateRequests"]]
            token = page["NextToken"]
            if token is None:
                break
        assert seen == [p["CertificateRequestId"] for p in reversed(placed)]
        with pytest.raises(Exception, match="NextToken"):
            service.call("ListCertificateRequests", {"NextToken": "bm9wZQ=="})
    finally:
        service.close()
