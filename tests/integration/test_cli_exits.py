"""The command line's contract (SPEC §8): exit codes, every page, output formats, quiet on a
closed pipe, --version, strict arguments and help written as sentences."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from certwatch.app.cli import _build_parser, main
from certwatch.app.service import Service
from tests.certfactory import make_pki
from tests.conftest import make_config
from tests.integration.servers import api_server
from tests.support import free_port


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A control-plane service with no alert URL."""
    svc = Service(make_config(tmp_path))
    yield svc
    svc.close()


@pytest.fixture
def url(service: Service) -> Iterator[str]:
    """Its API, live on a free loopback port."""
    with api_server(service) as base:
        yield base


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `certwatch …` in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _listener(service: Service) -> str:
    """A listener with a fresh certificate, created through the service's actions."""
    leaf = make_pki().leaf("site.example")
    cert = service.call("UploadCertificate", leaf.upload_params("site"))["CertificateId"]
    lb = service.call("CreateLoadBalancer", {"LoadBalancerName": "web"})["LoadBalancerId"]
    sg = service.call(
        "CreateServerGroup",
        {"ServerGroupName": "app", "Servers": [{"ServerIp": "127.0.0.1", "Port": 9}]},
    )["ServerGroupId"]
    answer = service.call(
        "CreateListener",
        {
            "LoadBalancerId": lb,
            "ListenerPort": free_port(),
            "ServerGroupId": sg,
            "CertificateIds": [cert],
        },
    )
    return str(answer["ListenerId"])


def test_done_is_0_and_refused_is_1(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A call that succeeds exits 0; one the service refuses prints Code: Message and exits 1."""
    assert run(capsys, "--api", url, "policies", "list")[0] == 0
    code, out, err = run(capsys, "--api", url, "certs", "delete", "cert-0000000000000000")
    assert (code, out) == (1, "") and err.startswith("CertificateNotFound: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["certs", "frobnicate"],
        ["rotate"],
        ["rotate", "lsn-1", "lsn-2"],
        ["stage", "a.pem", "b.pem", "c.pem"],
        ["server-groups", "create", "app", "--server", "127.0.0.1"],
        ["listeners", "create", "--lb", "nlb-1", "--port", "x"],
        ["certs", "upload", "x", "--cert", "/nonexistent.pem"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A command line that cannot be run exits 2 with one line, before calling the service."""
    try:
        code = main(["--api", url, *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "error" in err[0]


def test_unreachable_is_3(capsys: pytest.CaptureFixture[str]) -> None:
    """No service at --api exits 3 and says where it looked."""
    where = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "--api", where, "listeners", "list")
    assert code == 3 and where in err


def test_rejected_rotation_is_1(
    service: Service, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rotation with no staged candidate is Rejected: printed, and exit 1."""
    listener = _listener(service)
    code, out, err = run(capsys, "--api", url, "rotate", listener)
    assert code == 1 and "Result: Rejected" in out and err.startswith("Rejected: ")


def test_rejected_staging_is_1(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A staged certificate that chains to no trusted root is Rejected: exit 1."""
    stranger = make_pki("stranger").leaf("site.example")
    pem = tmp_path / "renewed.pem"
    pem.write_text(stranger.chain_pem + stranger.key_pem)
    code, out, err = run(capsys, "--api", url, "--json", "stage", str(pem))
    assert json.loads(out)["Status"] == "Rejected"
    assert code == 1 and err.startswith("Rejected: ")


def test_alerts_test_without_url_says_so(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`alerts test` with no alert URL configured says that nothing was sent, and exits 0."""
    code, _, err = run(capsys, "--api", url, "alerts", "test")
    assert code == 0 and "no alert URL is configured (alerts.urls)" in err


class _Accept(BaseHTTPRequestHandler):
    """A webhook that takes every POST."""

    def do_POST(self) -> None:
        """Read the body and answer 200."""
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        """Keep the test output quiet."""


def test_alerts_test_with_failing_urls_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`alerts test` with 2 of 3 URLs failing reports each URL and exits 1."""
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    urls = [f"json://127.0.0.1:{hook.server_port}/"] + [
        f"json://127.0.0.1:{free_port()}/" for _ in range(2)
    ]
    svc = Service(make_config(tmp_path, alerts={"urls": urls}))
    try:
        with api_server(svc) as base:
            code, out, err = run(capsys, "--api", base, "alerts", "test")
    finally:
        svc.close()
        hook.shutdown()
        hook.server_close()
    assert code == 1 and "2 of 3 alert URLs" in err
    assert out.count("True") == 1 and out.count("False") == 2


def test_every_page_is_fetched(
    service: Service, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certs list` shows all 120 certificates, in a table and as JSON, not the first page."""
    pki = make_pki()
    for i in range(120):
        service.call("UploadCertificate", pki.leaf(f"h{i}.example").upload_params(f"c{i}"))
    code, out, _ = run(capsys, "--api", url, "certs", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 122 and lines[-1] == "TotalCount: 120"
    code, out, _ = run(capsys, "--api", url, "--output", "json", "certs", "list")
    answer = json.loads(out)
    assert len({c["CertificateId"] for c in answer["Certificates"]}) == 120
    assert answer.get("NextToken") is None


def test_closed_pipe_ends_quietly(service: Service, url: str, tmp_path: Path) -> None:
    """`certwatch … --json | head` prints the first lines and no traceback."""
    pki = make_pki()
    for i in range(120):
        service.call("UploadCertificate", pki.leaf(f"h{i}.example").upload_params(f"c{i}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'"{sys.executable}" -m certwatch.app.cli --api {url} certs list --json | head -n 3;'
            ' exit "${PIPESTATUS[0]}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.stderr == "" and result.returncode == 0
    assert len(result.stdout.splitlines()) == 3


def test_scan_prints_sentences(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`certwatch scan` prints what the scan counted as sentences, not a Python dict."""
    code, out, _ = run(capsys, "--api", url, "scan")
    assert code == 0 and out.startswith("Scan scn-")
    assert "{" not in out and "Probes: 0 run, 0 failed." in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`certwatch --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("certwatch 0.")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every sub-command's parser below it."""
    yield parser
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for child in act.choices.values():
                yield from _parsers(child)


def test_every_command_and_option_has_a_sentence_of_help() -> None:
    """Every command has a description and every option a help text ending in a full stop."""
    parser, _ = _build_parser()
    for each in _parsers(parser):
        assert each is parser or (each.description or "").endswith("."), each.prog
        for act in each._actions:
            if isinstance(act, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert (act.help or "").endswith("."), f"{each.prog} {act.dest}"


def test_load_balancers_and_server_groups_list_and_delete(
    service: Service, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lb list` / `server-groups list` name the listeners that use each; deleting one in use
    is ResourceInUse (exit 1); once its listener is gone, it is deleted."""
    listener = _listener(service)
    code, out, _ = run(capsys, "--api", url, "--json", "lb", "list")
    (lb,) = json.loads(out)["LoadBalancers"]
    assert code == 0 and lb["ListenerIds"] == [listener] and lb["LoadBalancerName"] == "web"
    code, out, _ = run(capsys, "--api", url, "--json", "server-groups", "list")
    (sg,) = json.loads(out)["ServerGroups"]
    assert sg["ListenerIds"] == [listener]
    assert sg["Servers"] == [{"ServerIp": "127.0.0.1", "Port": 9, "Weight": 100}]
    code, out, _ = run(capsys, "--api", url, "server-groups", "list")
    assert "127.0.0.1:9/100" in out and listener in out
    for argv in (
        ["lb", "delete", lb["LoadBalancerId"]],
        ["server-groups", "delete", sg["ServerGroupId"]],
    ):
        code, _, err = run(capsys, "--api", url, *argv)
        assert code == 1 and err.startswith("ResourceInUse: ") and listener in err
    service.call("DeleteListener", {"ListenerId": listener})
    for argv in (
        ["lb", "delete", lb["LoadBalancerId"]],
        ["server-groups", "delete", sg["ServerGroupId"]],
    ):
        assert run(capsys, "--api", url, *argv)[0] == 0
    assert json.loads(run(capsys, "--api", url, "--json", "lb", "list")[1])["LoadBalancers"] == []
    code, _, err = run(capsys, "--api", url, "lb", "delete", lb["LoadBalancerId"])
    assert code == 1 and err.startswith("LoadBalancerNotFound: ")
