"""Backend health checks: TCP connects on the worker's loop mark servers up and down.

Rules:
- A server of a group with a `HealthCheck` starts up (a new worker or a new group does not
  refuse traffic before its first check) and is checked at once, then every `interval`
  seconds: a connect to `connect_port` (else the server's port), bounded by
  `connect_timeout`, closed as soon as it is made.
- `unhealthy_threshold` failures in a row mark it down; `healthy_threshold` successes in a
  row mark it up again. So a server that dies is down within `unhealthy_threshold`
  intervals (plus one connect timeout when it stops answering rather than refuses).
- Every worker checks for itself (`HealthChecks` is one worker's): the state a worker
  routes by is what that process sees, it needs no messages from the parent (whose lock a
  large change holds for seconds), and a replacement worker checks from its start. The cost
  is one connect per server per interval per worker: with 8 workers and the default 10 s,
  0.8 connects a second per server and node, which no TCP server notices.
- A server is checked once per worker however many listeners share its group; a changed
  check restarts the server's checks at once and keeps its state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable

from offload.spec import HealthCheck, ListenerSpec

log = logging.getLogger(__name__)

# (server group id, server address, server port)
ServerKey = tuple[str, str, int]


def backend_label(host: str, port: int) -> str:
    """The `backend` label of a server: `ip:port` (`[ip]:port` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BackendHealth:
    """One server's state as this worker's checks see it, and the run of results behind it."""

    __slots__ = ("up", "_run")

    def __init__(self) -> None:
        self.up = True
        # Results in a row against the current state (successes while down, failures while up).
        self._run = 0

    def record(self, ok: bool, check: HealthCheck) -> bool:
        """Count one check result; True when it changed the state."""
        if ok == self.up:
            self._run = 0
            return False
        self._run += 1
        if self._run < (check.healthy_threshold if ok else check.unhealthy_threshold):
            return False
        self.up, self._run = ok, 0
        return True


async def connects(host: str, port: int) -> bool:
    """True when a TCP connection to `host:port` is made (the caller bounds the time)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


class _Checker:
    """The checks of one server, a task on the worker's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: ServerKey, check: HealthCheck) -> None:
        self._loop = loop
        self.key = key
        self.check = check
        self.state = BackendHealth()
        self._task = loop.create_task(self._run())

    def reconfigure(self, check: HealthCheck) -> None:
        """Check by `check` from now on (at once), keeping the state."""
        if check == self.check:
            return
        self.check = check
        self._task.cancel()
        self._task = self._loop.create_task(self._run())

    def stop(self) -> None:
        """Check no more."""
        self._task.cancel()

    async def _run(self) -> None:
        group, host, port = self.key
        while True:
            check = self.check
            started = self._loop.time()
            try:
                async with asyncio.timeout(check.connect_timeout):
                    ok = await connects(host, check.connect_port or port)
            except TimeoutError:
                ok = False
            if self.state.record(ok, check):
                log.warning(
                    "backend %s of server group %s is %s", backend_label(host, port), group,
                    "up" if ok else "down",
                )
            await asyncio.sleep(max(0.0, started + check.interval - self._loop.time()))


class HealthChecks:
    """Every server one worker checks, by server group and address."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._checkers: dict[ServerKey, _Checker] = {}

    def update(self, specs: Iterable[ListenerSpec]) -> None:
        """Check exactly the servers of the groups with checks among `specs`."""
        wanted: dict[ServerKey, HealthCheck] = {}
        for spec in specs:
            if spec.health_check is not None:
                for backend in spec.backends:
                    wanted[(spec.server_group_id, backend.host, backend.port)] = spec.health_check
        for key in [k for k in self._checkers if k not in wanted]:
            self._checkers.pop(key).stop()
        for key, check in wanted.items():
            checker = self._checkers.get(key)
            if checker is None:
                self._checkers[key] = _Checker(self._loop, key, check)
            else:
                checker.reconfigure(check)

    def states(self, spec: ListenerSpec) -> tuple[BackendHealth | None, ...]:
        """The state of each of `spec`'s backends (None: not checked, always a candidate);
        `update` must have seen `spec`."""
        if spec.health_check is None:
            return (None,) * len(spec.backends)
        return tuple(
            self._checkers[(spec.server_group_id, b.host, b.port)].state for b in spec.backends
        )

    def up(self) -> dict[tuple[str, str], bool]:
        """Whether each checked server is up, by (server group id, `backend` label)."""
        return {
            (group, backend_label(host, port)): checker.state.up
            for (group, host, port), checker in self._checkers.items()
        }

    def close(self) -> None:
        """Stop every check."""
        for checker in self._checkers.values():
            checker.stop()
        self._checkers.clear()
