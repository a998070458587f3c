"""Real servers for tests: the API over HTTP in a thread, and `certwatch serve` as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import uvicorn

from certwatch.api.http import create_app, server_config
from certwatch.app.service import Service
from certwatch.console import mount as mount_console
from tests.support import free_port


@contextmanager
def api_server(service: Service) -> Iterator[str]:
    """Serve the service's API with uvicorn on a free port; yield its base URL."""
    port = free_port()
    app = create_app(service)
    mount_console(app, service)
    server = uvicorn.Server(server_config(app, service.config.api, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "API server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class ServeProcess:
    """`certwatch serve` running as a real subprocess with its own config file."""

    def __init__(
        self,
        tmp_path: Path,
        toml: str = "",
        workers: int = 1,
        api_toml: str = "",
        data_dir: Path | None = None,
        drain_timeout: float = 5,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "certwatch.toml"
        self.config.write_text(
            f'data_dir = "{data_dir or tmp_path / "data"}"\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n{api_toml}'
            f"[proxy]\nworkers = {workers}\ndrain_timeout = {drain_timeout}\n" + toml
        )
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self, *extra: str, wait: bool = True, command: str = "serve", new_session: bool = False
    ) -> ServeProcess:
        """Start `certwatch <command>`; with `wait`, return once /healthz answers 200.

        `new_session` puts it in its own process group, to signal or kill it with its workers.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "certwatch.app.cli",
                    command,
                    "--config",
                    str(self.config),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=new_session,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, limit: float = 30.0) -> None:
        """Poll /healthz until it answers 200."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not healthy in {limit}s: {self.output()}")

    def stop(self, sig: int | None = signal.SIGTERM, limit: float = 30.0) -> int:
        """Send a signal (None: none, it is already stopping) and wait for the exit code."""
        assert self.process is not None
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(limit)

    def kill_group(self) -> None:
        """SIGKILL its process group (started with `new_session`), workers too, if any is left."""
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def output(self) -> str:
        """What the service logged."""
        return self.log.read_text(errors="replace")


def echo_when_served(
    port: int, root_pem: str, server_name: str, payload: bytes, limit: float = 15.0
) -> bytes:
    """Retry a verified TLS round trip to 127.0.0.1:port until it answers or `limit` passes."""
    ctx = ssl.create_default_context(cadata=root_pem)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                tls.sendall(payload)
                return tls.recv(len(payload) + 16)
        except OSError:
            time.sleep(0.05)
    return b""
