"""`certwatch serve` as a service manager runs it: health, auth, demo, SIGTERM and refusals."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx

from tests.integration.servers import ServeProcess, echo_when_served
from tests.support import eventually, free_port


def test_demo_serves_tls_and_drains_on_sigterm(tmp_path: Path) -> None:
    """The demo listener verifies with its root and echoes; an open connection survives SIGTERM's
    drain, and the process exits 0."""
    serve = ServeProcess(tmp_path)
    port = free_port()
    serve.start("--demo", "--demo-port", str(port))
    ca = tmp_path / "data" / "demo" / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="demo.localhost") as tls:
            tls.sendall(b"ping")
            assert tls.recv(16) == b"ping"
            assert tls.getpeercert()["subject"] == ((("commonName", "demo.localhost"),),)
            health = httpx.get(f"{serve.url}/healthz").json()
            assert health == {"Healthy": True, "store": True, "proxy": True}
            assert "/v1/CreateListener" in httpx.get(f"{serve.url}/openapi.json").json()["paths"]
            assert serve.process is not None
            serve.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            tls.sendall(b"still here")
            assert tls.recv(16) == b"still here"
    started = time.monotonic()
    assert serve.stop(sig=None) == 0
    assert time.monotonic() - started < 4, "the drain should end once connections are closed"

    assert "signal 15: draining" in serve.output()


def test_token_required_when_set(tmp_path: Path) -> None:
    """With api.token set, /v1 calls need the bearer token (401 Unauthorized otherwise)."""
    serve = ServeProcess(tmp_path, workers=0, api_toml='token = "s3cret"\n').start()
    try:
        denied = httpx.post(f"{serve.url}/v1/ListListeners", json={})
        assert (denied.status_code, denied.json()["Code"]) == (401, "Unauthorized")
        allowed = httpx.post(
            f"{serve.url}/v1/ListListeners", json={}, headers={"Authorization": "Bearer s3cret"}
        )
        assert allowed.status_code == 200 and allowed.json()["Listeners"] == []
    finally:
        assert serve.stop() == 0


def _refused_start(tmp_path: Path, config_text: str) -> subprocess.CompletedProcess[str]:
    """`certwatch serve` with this config, expected to stop before serving."""
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "certwatch.app.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_public_api_without_token(tmp_path: Path) -> None:
    """Listening beyond loopback with no token is refused at start with a reason."""
    result = _refused_start(
        tmp_path,
        f'data_dir = "{tmp_path}"\n[api]\nlisten = "0.0.0.0:{free_port()}"\n[proxy]\nworkers = 0\n',
    )
    assert result.returncode == 2
    assert "api.token" in result.stderr


def test_bad_config_is_named(tmp_path: Path) -> None:
    """A bad config value stops the start with the key named."""
    result = _refused_start(tmp_path, '[scan]\ninterval = "often"\n')
    assert result.returncode == 2 and "scan.interval" in result.stderr


def test_proxy_node_serves_what_the_api_node_configures(tmp_path: Path) -> None:
    """`certwatch proxy` on the same store serves a listener created through `certwatch serve`."""
    from offload.echo import EchoServer
    from tests.certfactory import make_pki

    api_node = ServeProcess(tmp_path, workers=0, toml="reload_interval = 0.5\n").start()
    (tmp_path / "edge").mkdir()
    proxy_node = ServeProcess(
        tmp_path / "edge", workers=1, toml="reload_interval = 0.5\n", data_dir=tmp_path / "data"
    )
    proxy_node.start(wait=False, command="proxy")
    try:
        with EchoServer() as echo:
            pki = make_pki()
            leaf = pki.leaf("edge.example.com")

            def call(action: str, **params: object) -> dict[str, object]:
                answer = httpx.post(f"{api_node.url}/v1/{action}", json=params, timeout=30)
                assert answer.status_code == 200, answer.text
                return dict(answer.json())

            cert = call("UploadCertificate", **leaf.upload_params("e"))["CertificateId"]
            lb = call("CreateLoadBalancer", LoadBalancerName="edge")["LoadBalancerId"]
            sg = call(
                "CreateServerGroup",
                ServerGroupName="g",
                Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 1}],
            )["ServerGroupId"]
            port = free_port()
            call(
                "CreateListener",
                LoadBalancerId=lb,
                ServerGroupId=sg,
                ListenerPort=port,
                CertificateIds=[cert],
            )
            answer = echo_when_served(port, pki.root_pem, "edge.example.com", b"edge")
            assert answer == b"edge", proxy_node.output()
    finally:
        assert proxy_node.stop() == 0
        assert api_node.stop() == 0


def test_group_sigterm_drains_instead_of_killing_workers(tmp_path: Path) -> None:
    """SIGTERM to the whole process group (as some service managers send) still drains and
    exits 0: workers leave the signal to the parent and are never restarted meanwhile."""
    import os

    serve = ServeProcess(tmp_path, workers=2)
    serve.start(new_session=True)
    assert serve.process is not None
    os.killpg(serve.process.pid, signal.SIGTERM)
    assert serve.stop(sig=None) == 0
    assert "restarting" not in serve.output()


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _worker_pids(parent: int) -> list[int]:
    """The multiprocessing 'spawn' children (proxy workers) of `parent`, read from /proc."""
    pids = []
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        with suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if int(_proc_stat(pid)[1]) == parent and b"--multiprocessing-fork" in cmdline:
                pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a killed zombie waiting to be reaped does not)."""
    try:
        return _proc_stat(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def _refused(port: int) -> bool:
    """Whether a connection to 127.0.0.1:port is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_second_sigterm_kills_the_draining_workers(tmp_path: Path) -> None:
    """A second SIGTERM while a worker drains an open TLS connection (long drain_timeout)
    exits at once and no worker outlives it: none is alive, the listener port refuses."""
    serve = ServeProcess(tmp_path, workers=2, drain_timeout=120)
    port = free_port()
    serve.start("--demo", "--demo-port", str(port), new_session=True)
    assert serve.process is not None
    ctx = ssl.create_default_context(cafile=str(tmp_path / "data" / "demo" / "ca.pem"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="demo.localhost") as tls:
                tls.sendall(b"ping")
                assert tls.recv(16) == b"ping"
                workers = _worker_pids(serve.process.pid)
                assert len(workers) == 2
                serve.process.send_signal(signal.SIGTERM)
                assert eventually(lambda: _refused(port), 10), "the workers did not stop listening"
                time.sleep(0.5)
                assert any(_alive(pid) for pid in workers), "a worker should be draining"
                serve.process.send_signal(signal.SIGTERM)
                assert serve.stop(sig=None, limit=5) == 128 + signal.SIGTERM
                assert eventually(lambda: not any(_alive(pid) for pid in workers), 5)
                assert _refused(port)
    finally:
        serve.kill_group()
