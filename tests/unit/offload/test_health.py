"""Health check thresholds: how many results in a row move a server up or down."""

from __future__ import annotations

import asyncio

import pytest

from offload.health import BackendHealth, backend_label, connects
from offload.spec import HealthCheck

CHECK = HealthCheck(healthy_threshold=2, unhealthy_threshold=3)


def _feed(state: BackendHealth, results: str) -> list[bool]:
    """The state after each result of `results` ("+" success, "-" failure)."""
    out = []
    for r in results:
        state.record(r == "+", CHECK)
        out.append(state.up)
    return out


@pytest.mark.parametrize(
    ("results", "states"),
    [
        ("--", [True, True]),
        ("---", [True, True, False]),
        ("--+---", [True, True, True, True, True, False]),
        ("---+", [True, True, False, False]),
        ("---++", [True, True, False, False, True]),
        ("---+-++", [True, True, False, False, False, False, True]),
    ],
)
def test_thresholds_count_results_in_a_row(results: str, states: list[bool]) -> None:
    """A server starts up, goes down after UnhealthyThreshold failures in a row and up after
    HealthyThreshold successes in a row; a result the other way restarts the count."""
    assert _feed(BackendHealth(), results) == states


def test_record_says_when_the_state_changed() -> None:
    """`record` is True exactly on the result that flips the state."""
    state = BackendHealth()
    assert [state.record(False, CHECK) for _ in range(4)] == [False, False, True, False]
    assert [state.record(True, CHECK) for _ in range(2)] == [False, True]


def test_backend_label_is_ip_port() -> None:
    """The metric's `backend` label is ip:port, IPv6 in brackets."""
    assert backend_label("10.0.0.1", 80) == "10.0.0.1:80"
    assert backend_label("::1", 443) == "[::1]:443"


def test_connects_tells_a_listening_port_from_a_closed_one() -> None:
    """The TCP check succeeds against a listening socket and fails against a closed port."""

    async def probe() -> tuple[bool, bool]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        open_ok = await connects("127.0.0.1", port)
        server.close()
        await server.wait_closed()
        return open_ok, await connects("127.0.0.1", port)

    assert asyncio.run(probe()) == (True, False)
