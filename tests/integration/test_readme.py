"""The README's commands, run as written on a fresh data folder: the demo's, the rotation
recipe's and the API example's (the fixed ports 9180, 8443, 9443 and 8080 become free
loopback ports; nothing else changes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import httpx

from tests.support import eventually, free_port

ROOT = Path(__file__).parents[2]
PORTS = ("9180", "8443", "9443", "8080")


def _blocks(section: str) -> list[str]:
    """The ```sh blocks of one `## section` of the README."""
    text = ROOT.joinpath("README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, re.S)


def _bash(script: str, cwd: Path, ports: dict[str, str], env: dict[str, str]) -> str:
    """Run a README block with bash -e in its own session; its stdout. Whatever it left
    running in the background (the API example's web server) is stopped afterwards."""
    for fixed, free in ports.items():
        script = script.replace(fixed, free)
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=180)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, f"{script}\n--- stdout\n{out}\n--- stderr\n{err}"
    return out


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    """The demo starts, its checks answer, the rotation recipe applies a renewal and the API
    example serves its backend through a new TLS listener."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    ports = {fixed: str(free_port()) for fixed in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
    env["CERTWATCH_API_URL"] = f"http://127.0.0.1:{ports['9180']}"
    start = _blocks("Start the demo")
    install_and_serve = start[0].strip().split(" && ")[-1]
    assert install_and_serve == ".venv/bin/certwatch serve --demo"
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        ["bash", "-c", f"exec {install_and_serve} --demo-port {ports['8443']}"],
        cwd=tmp_path,
        env={**env, "CERTWATCH_API_LISTEN": f"127.0.0.1:{ports['9180']}"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"{env['CERTWATCH_API_URL']}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert eventually(healthy, 90), (tmp_path / "serve.log").read_text()
        tried = _bash(start[2], tmp_path, ports, env)
        assert '"Healthy": true' in tried.replace('"Healthy":true', '"Healthy": true')
        assert "demo.localhost" in tried and "certwatch_certificate_not_after" in tried
        rotated = _bash(_blocks("Rotate the demo certificate")[0], tmp_path, ports, env)
        assert "Result: Applied" in rotated and "notAfter=" in rotated
        served = _bash(_blocks("The API")[0], tmp_path, ports, env)
        assert "hello through certwatch" in served
        assert '"Code":"CertificateNotFound"' in served.replace(" ", "")
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()


def test_readme_shows_the_console_screenshot() -> None:
    """The README embeds docs/console.png, a PNG under 200 KB that the screenshot script
    (tests/integration/screenshot.py) takes."""
    readme = ROOT.joinpath("README.md").read_text()
    assert "](docs/console.png)" in readme
    shot = ROOT / "docs" / "console.png"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 200_000
    assert ROOT.joinpath("tests", "integration", "screenshot.py").is_file()
