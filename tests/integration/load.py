"""Load for the real-size tests: held TLS connections, handshake loops, and which worker
process holds a connection (from /proc, as an operator would find it with `ss -p`)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from tests.integration.offload.conftest import echo_roundtrip, tls_connect


@dataclass
class HandshakeLoop:
    """TLS handshakes and one echo each, in a loop on its own thread, bounded in time."""

    port: int
    ctx: ssl.SSLContext
    names: list[str]
    limit: float = 120.0
    done: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HandshakeLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            name = self.names[i % len(self.names)]
            i += 1
            try:
                with tls_connect(self.port, self.ctx, name) as sock:
                    if echo_roundtrip(sock) != b"ping":
                        raise OSError("no echo")
                self.done += 1
            except (OSError, ssl.SSLError) as exc:
                self.failures.append((time.monotonic(), f"{name}: {exc!r}"))


def still_echoes(sock: ssl.SSLSocket) -> bool:
    """True when a held connection still carries a round trip."""
    try:
        return echo_roundtrip(sock, b"still here") == b"still here"
    except (OSError, ssl.SSLError):
        return False


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(p) for p in f.read().split())
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _server_inode(client: socket.socket) -> int | None:
    """The inode of the server side of a loopback TCP connection (from /proc/net/tcp): the
    socket whose ports are the client's, swapped (the remote port alone may also be an
    unrelated connection's, e.g. the proxy's to its backend from the same port number)."""
    local_port, server_port = client.getsockname()[1], client.getpeername()[1]
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            ports = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
            if ports == (server_port, local_port) and fields[3] == "01":
                return int(fields[9])
    return None


def owners(clients: list[ssl.SSLSocket], pids: list[int]) -> list[int | None]:
    """Which of `pids` serves each client connection (None when none does)."""
    inodes = {pid: _socket_inodes(pid) for pid in pids}
    result: list[int | None] = []
    for client in clients:
        inode = _server_inode(client)
        result.append(next((pid for pid, held in inodes.items() if inode in held), None))
    return result
