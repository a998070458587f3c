"""The command line, in-process against a live API and once as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwatch.app.cli import main
from certwatch.app.service import Service
from tests.certfactory import make_pki
from tests.conftest import make_config
from tests.integration.servers import ServeProcess, api_server
from tests.support import free_port


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A live API on SQLite."""
    service = Service(make_config(tmp_path))
    with api_server(service) as base:
        yield base
    service.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `certwatch …` in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_full_workflow(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Upload, create a listener, add certificates and list them, all from the CLI."""
    pki = make_pki()
    leaf, extra = pki.leaf("a.example.com"), pki.leaf("b.example.com")
    for name, issued in (("a", leaf), ("b", extra)):
        (tmp_path / f"{name}.pem").write_text(issued.chain_pem)
        (tmp_path / f"{name}.key").write_text(issued.key_pem)
    ids = []
    for name in ("a", "b"):
        code, out, _ = run(
            capsys,
            "--api",
            url,
            "--json",
            "certs",
            "upload",
            name,
            "--cert",
            str(tmp_path / f"{name}.pem"),
            "--key",
            str(tmp_path / f"{name}.key"),
        )
        assert code == 0
        ids.append(json.loads(out)["CertificateId"])
    _, out, _ = run(capsys, "lb", "create", "web", "--api", url, "--json")
    lb = json.loads(out)["LoadBalancerId"]
    _, out, _ = run(
        capsys,
        "server-groups",
        "create",
        "app",
        "--server",
        "127.0.0.1:8080:50",
        "--api",
        url,
        "--json",
    )
    sg = json.loads(out)["ServerGroupId"]
    code, out, _ = run(
        capsys,
        "listeners",
        "create",
        "--lb",
        lb,
        "--port",
        str(free_port()),
        "--server-group",
        sg,
        "--cert",
        ids[0],
        "--thresholds",
        "14,3",
        "--api",
        url,
        "--json",
    )
    assert code == 0
    lid = json.loads(out)["ListenerId"]
    assert run(capsys, "listeners", "add-certs", lid, ids[1], "--api", url)[0] == 0
    code, out, _ = run(capsys, "listeners", "show", lid, "--api", url)
    assert code == 0 and f"AdditionalCertificateIds: {ids[1]}" in out
    assert "AlertThresholdsDays: 14,3" in out
    code, out, _ = run(capsys, "certs", "list", "--api", url)
    assert code == 0 and "a.example.com" in out and "b.example.com" in out
    assert out.splitlines()[0].split()[:2] == ["CertificateId", "CertificateName"]


def test_errors_print_code_and_exit_nonzero(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An API error prints `Code: Message` on stderr and exits 1."""
    code, out, err = run(capsys, "--api", url, "certs", "show", "cert-0000000000000000")
    assert code == 1 and out == ""
    assert err.startswith("CertificateNotFound: ")


def test_unreachable_service(capsys: pytest.CaptureFixture[str]) -> None:
    """A service that is not running is reported, not a traceback, and exits 3."""
    code, _, err = run(capsys, "--api", f"http://127.0.0.1:{free_port()}", "certs", "list")
    assert code == 3 and err.startswith("Unreachable: ")


def test_cli_subprocess_against_serve(tmp_path: Path) -> None:
    """The installed entry point talks to a real `certwatch serve` subprocess."""
    serve = ServeProcess(tmp_path, workers=0).start()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "certwatch.app.cli",
                "--api",
                serve.url,
                "--json",
                "policies",
                "list",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        names = [p["SecurityPolicyId"] for p in json.loads(result.stdout)["SecurityPolicies"]]
        assert names[:2] == ["tls_cipher_policy_1_0", "tls_cipher_policy_1_1"]
    finally:
        assert serve.stop() == 0


def test_bare_alerts_lists_alerts(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`certwatch alerts` alone lists the alerts (none yet: just the header)."""
    code, out, _ = run(capsys, "--api", url, "alerts")
    assert code == 0
    assert out.split()[:3] == ["AlertId", "CertificateId", "Threshold"]


def test_stage_takes_one_pem_or_a_crt_and_key(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stage` sends the certificates and the key of one PEM file, or of a CRT and a KEY file,
    and refuses files without a key before calling the API."""
    pki = make_pki()
    one, pair = pki.leaf("one.example.com"), pki.leaf("pair.example.com")
    (tmp_path / "one.pem").write_text(one.key_pem + one.chain_pem)
    (tmp_path / "pair.crt").write_text(pair.chain_pem)
    (tmp_path / "pair.key").write_text(pair.key_pem)
    (tmp_path / "root.pem").write_text(pki.root_pem)
    code, _, _ = run(
        capsys, "--api", url, "certs", "upload", "root", "--cert", str(tmp_path / "root.pem"),
        "--type", "Ca",
    )
    assert code == 0
    for files in (["one.pem"], ["pair.crt", "pair.key"]):
        code, out, _ = run(
            capsys, "--api", url, "--json", "stage", *(str(tmp_path / f) for f in files)
        )
        assert code == 0 and json.loads(out)["Status"] == "Pending"
    code, _, err = run(capsys, "--api", url, "stage", str(tmp_path / "pair.crt"))
    assert code == 2 and "no private key" in err


def test_server_group_health_check_flags(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`server-groups create` with --health-check* flags turns checks on with them;
    `server-groups update` changes only the flags given; a bad value prints the API's
    InvalidParameter on one line and exits 1."""
    code, out, _ = run(
        capsys, "server-groups", "create", "app", "--server", "127.0.0.1:8080",
        "--health-check-port", "9000", "--health-check-interval", "2",
        "--health-check-timeout", "1", "--api", url, "--json",
    )
    assert code == 0
    sg = json.loads(out)["ServerGroupId"]
    code, _, _ = run(
        capsys, "server-groups", "update", sg, "--name", "web", "--unhealthy-threshold", "2",
        "--no-health-check", "--api", url,
    )
    assert code == 0
    _, out, _ = run(capsys, "server-groups", "list", "--api", url, "--json")
    (group,) = json.loads(out)["ServerGroups"]
    assert group["ServerGroupName"] == "web"
    assert group["HealthCheckConfig"] == {
        "HealthCheckEnabled": False, "HealthCheckType": "TCP", "HealthCheckConnectPort": 9000,
        "HealthCheckInterval": 2.0, "HealthCheckConnectTimeout": 1.0, "HealthyThreshold": 3,
        "UnhealthyThreshold": 2,
    }
    code, _, err = run(
        capsys, "server-groups", "update", sg, "--healthy-threshold", "0", "--api", url,
    )
    assert code == 1
    assert err.startswith("InvalidParameter: ") and "HealthyThreshold" in err
    assert len(err.strip().splitlines()) == 1
    run(capsys, "server-groups", "update", sg, "--health-check", "--api", url)
    _, out, _ = run(capsys, "server-groups", "list", "--api", url)
    assert "TCP:9000 every 2s, timeout 1s, 3 up/2 down" in out.splitlines()[1]


def test_listener_option_flags(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--alpn/--alpn-policy, --proxy-protocol, --cps and --max-connections set the listener's
    options on create; update changes the ones given and --no-alpn turns ALPN off."""
    leaf = make_pki().leaf("opts.example.com")
    (tmp_path / "o.pem").write_text(leaf.chain_pem)
    (tmp_path / "o.key").write_text(leaf.key_pem)
    api = ("--api", url, "--json")
    _, out, _ = run(capsys, "certs", "upload", "o", "--cert", str(tmp_path / "o.pem"),
                    "--key", str(tmp_path / "o.key"), *api)
    cert = json.loads(out)["CertificateId"]
    lb = json.loads(run(capsys, "lb", "create", "web", *api)[1])["LoadBalancerId"]
    _, out, _ = run(capsys, "server-groups", "create", "app", "--server", "127.0.0.1:8080", *api)
    sg = json.loads(out)["ServerGroupId"]
    code, out, _ = run(
        capsys, "listeners", "create", "--lb", lb, "--port", str(free_port()),
        "--server-group", sg, "--cert", cert, "--alpn", "--alpn-policy", "HTTP2Optional",
        "--proxy-protocol", "--cps", "100", "--max-connections", "5000", *api,
    )
    assert code == 0
    lid = json.loads(out)["ListenerId"]

    def options() -> list[object]:
        shown = json.loads(run(capsys, "listeners", "show", lid, *api)[1])
        names = ("AlpnEnabled", "AlpnPolicy", "ProxyProtocolEnabled", "Cps", "MaxConnections")
        return [shown[n] for n in names]

    assert options() == [True, "HTTP2Optional", True, 100, 5000]
    assert run(capsys, "listeners", "update", lid, "--no-alpn", "--cps", "0", *api)[0] == 0
    assert options() == [False, "HTTP2Optional", True, 0, 5000]
    with pytest.raises(SystemExit) as refused:
        run(capsys, "listeners", "update", lid, "--alpn-policy", "HTTP3", *api)
    assert refused.value.code == 2 and "invalid choice: 'HTTP3'" in capsys.readouterr().err
