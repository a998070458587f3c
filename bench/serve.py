"""`certwatch serve` as a subprocess for benchmarks, and what /proc says about its workers.

Trimmed from tests/integration/servers.py (benchmarks do not import from tests/).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import procfs


def free_ports(count: int) -> list[int]:
    """`count` distinct free 127.0.0.1 TCP ports (all bound at once, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class ServeProcess:
    """`certwatch serve` with its own config file and data_dir, in its own process group."""

    def __init__(self, tmp_path: Path, toml: str = "", workers: int = 2) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "certwatch.toml"
        self.config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            f"[proxy]\nworkers = {workers}\ndrain_timeout = 5\n" + toml
        )
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, limit: float = 60.0) -> ServeProcess:
        """Start it and return once /healthz answers 200 (raises RuntimeError otherwise)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "certwatch.app.cli", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve not healthy in {limit:g} s: {self.tail()}")

    def stop(self, limit: float = 30.0) -> int | None:
        """SIGTERM, wait up to `limit` for the exit code; then SIGKILL its process group.

        Returns the exit code of the SIGTERM stop, or None when it had to be killed.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(limit)
        except subprocess.TimeoutExpired:
            code = None
        try:  # workers left behind (serve killed, or a worker that did not exit)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if code is None:
            self.process.wait(10)
        return code

    def tail(self, lines: int = 30) -> str:
        """The last lines the service logged."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(serve_pid: int) -> list[int]:
    """The proxy worker processes of `serve_pid`: its children started by multiprocessing's
    spawn (`spawn_main`), not the resource tracker; oldest first."""
    pids = [
        pid
        for pid in procfs.tree(serve_pid)
        if pid != serve_pid and _parent(pid) == serve_pid and "spawn_main" in _cmdline(pid)
    ]
    return sorted(pids, key=lambda pid: procfs.start_time(pid) or 0)


def _parent(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def rss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` has open (from /proc/<pid>/fd)."""
    out: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp4_by_inode() -> dict[int, tuple[int, int]]:
    """inode → (local port, remote port) of every IPv4 TCP socket (/proc/net/tcp)."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if inode:
                out[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
    return out
