"""The proxy's connection handling: timeouts, backends, plain TCP, bulk data, counters."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prometheus_client import CollectorRegistry, generate_latest

from offload.echo import EchoServer
from offload.export import OffloadCollector
from offload.spec import Backend
from offload.workers import ProxyControl
from tests.certfactory import Pki
from tests.integration.offload.conftest import (
    client_context,
    echo_roundtrip,
    listener,
    snapshot,
    tls_connect,
)
from tests.support import eventually, free_port


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the peer closes (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _still_open(sock: socket.socket) -> bool:
    """True when the peer has neither closed nor sent anything yet."""
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False


def test_silent_client_is_dropped_after_handshake_timeout(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A TCP client that never says hello is dropped after the timeout; others still get in."""
    spec = listener(pki.leaf("slow.example.com"), backends, handshake_timeout=1.0)
    control.apply(snapshot(spec))
    with ExitStack() as stack:
        silent = [
            stack.enter_context(socket.create_connection(("127.0.0.1", spec.port)))
            for _ in range(4)
        ]
        started = time.monotonic()
        with tls_connect(spec.port, client_context()) as sock:
            assert echo_roundtrip(sock) == b"ping"
        assert all(_still_open(raw) for raw in silent)
        assert all(_closed_by_peer(raw, within=5.0) for raw in silent)
        assert time.monotonic() - started >= 0.9
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("timeout") == 4, timeout=5
    )


def test_idle_connection_is_closed_busy_one_is_not(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """No bytes for idle_timeout closes the connection; steady traffic keeps it open."""
    spec = listener(pki.leaf("idle.example.com"), backends, idle_timeout=1.0)
    control.apply(snapshot(spec))
    with (
        tls_connect(spec.port, client_context()) as idle,
        tls_connect(spec.port, client_context()) as busy,
    ):
        assert echo_roundtrip(idle) == b"ping"
        for _ in range(8):
            time.sleep(0.25)
            assert echo_roundtrip(busy) == b"ping"
        assert _closed_by_peer(idle, within=0.1)
        assert echo_roundtrip(busy) == b"ping"
        assert _closed_by_peer(busy, within=3.0)


def test_refused_backend_fails_over_to_the_next(
    control: ProxyControl, pki: Pki, echo: EchoServer
) -> None:
    """With the first backend refusing connections, every client is served by the next one."""
    spec = listener(
        pki.leaf("failover.example.com"),
        (Backend("127.0.0.1", free_port(), 100), Backend("127.0.0.1", echo.port, 1)),
    )
    control.apply(snapshot(spec))
    for _ in range(6):
        with tls_connect(spec.port, client_context()) as sock:
            assert echo_roundtrip(sock) == b"ping"
    assert control.stats().get(spec.listener_id).failure("backend_unavailable") == 0


@contextmanager
def _unanswered_backend() -> Iterator[Backend]:
    """A backend whose SYNs go unanswered: its one-place accept queue is already full."""
    with socket.socket() as server, ExitStack() as fillers:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        for _ in range(4):
            sock = fillers.enter_context(socket.socket())
            sock.setblocking(False)
            sock.connect_ex(server.getsockname())
        time.sleep(0.05)
        with socket.socket() as probe:
            probe.settimeout(0.3)
            try:
                probe.connect(server.getsockname())
            except TimeoutError:
                pass
            else:
                raise AssertionError("the backend should not have answered")
        yield Backend("127.0.0.1", server.getsockname()[1], 100)


def test_backend_that_never_answers_times_out_and_fails_over(pki: Pki, echo: EchoServer) -> None:
    """A connect attempt is given up after connect_timeout and the next server serves the
    client; the silent server is then tried last, so the next client waits for nothing."""
    with _unanswered_backend() as silent, ProxyControl(workers=1) as proxy:
        spec = listener(
            pki.leaf("silent.example.com"),
            (silent, Backend("127.0.0.1", echo.port, 1)),
            connect_timeout=0.4,
        )
        proxy.apply(snapshot(spec))
        waited = []
        for _ in range(2):
            with tls_connect(spec.port, client_context()) as sock:
                started = time.monotonic()
                assert echo_roundtrip(sock) == b"ping"
                waited.append(time.monotonic() - started)
        assert 0.4 <= waited[0] < 3.0
        assert waited[1] < 0.4
        assert proxy.stats().get(spec.listener_id).failure("backend_unavailable") == 0


def test_only_silent_backend_closes_client_after_connect_timeout(
    control: ProxyControl, pki: Pki
) -> None:
    """When the only server never answers, the client is closed once connect_timeout passes
    and backend_unavailable is counted."""
    with _unanswered_backend() as silent:
        spec = listener(pki.leaf("hung.example.com"), (silent,), connect_timeout=0.5)
        control.apply(snapshot(spec))
        with tls_connect(spec.port, client_context()) as sock:
            started = time.monotonic()
            assert _closed_by_peer(sock, within=5.0)
            waited = time.monotonic() - started
    assert 0.4 <= waited < 3.0
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("backend_unavailable") == 1,
        timeout=5,
    )


def test_no_backend_answers_closes_client_and_counts(control: ProxyControl, pki: Pki) -> None:
    """When every backend refuses, the client is closed cleanly and backend_unavailable counted."""
    spec = listener(
        pki.leaf("down.example.com"),
        (Backend("127.0.0.1", free_port()), Backend("127.0.0.1", free_port())),
    )
    control.apply(snapshot(spec))
    for _ in range(3):
        with tls_connect(spec.port, client_context()) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("backend_unavailable") == 3,
        timeout=5,
    )


def test_weighted_round_robin_over_plain_tcp(pki: Pki) -> None:
    """Weights 3:1 send three quarters of the connections to the first backend (one worker)."""
    with (
        EchoServer(greeting=b"A") as a,
        EchoServer(greeting=b"B") as b,
        ProxyControl(workers=1) as proxy,
    ):
        spec = listener(
            pki.leaf("wrr.example.com"),
            (Backend("127.0.0.1", a.port, 3), Backend("127.0.0.1", b.port, 1)),
            protocol="TCP",
        )
        proxy.apply(snapshot(spec))
        seen: Counter[bytes] = Counter()
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
                seen[sock.recv(1)] += 1
    assert seen == {b"A": 30, b"B": 10}


def test_plain_tcp_half_close_relays_the_answer(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A TCP client that shuts down its write side still receives the whole answer."""
    spec = listener(pki.leaf("tcp.example.com"), backends, protocol="TCP")
    control.apply(snapshot(spec))
    payload = bytes(range(256)) * 4096
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    assert bytes(got) == payload


def test_bulk_transfer_with_slow_reader_keeps_every_byte(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """32 MB through TLS with a client that reads late arrive intact (back-pressure, no loss)."""
    spec = listener(pki.leaf("bulk.example.com"), backends)
    control.apply(snapshot(spec))
    block = bytes(range(256)) * 256
    total = 32 * 1024 * 1024
    with tls_connect(spec.port, client_context()) as sock:
        sock.settimeout(10)
        sender = threading.Thread(
            target=lambda: [sock.sendall(block) for _ in range(total // len(block))]
        )
        sender.start()
        time.sleep(0.5)
        received = bytearray()
        while len(received) < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        sender.join()
    assert len(received) == total
    assert received == block * (total // len(block))


def test_stats_count_connections_bytes_and_failures(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """Connections, bytes each way, handshakes and failures by reason show in stats and /metrics."""
    spec = listener(pki.leaf("stats.example.com"), backends)
    control.apply(snapshot(spec))
    for size in (100, 1000, 10000):
        with tls_connect(spec.port, client_context()) as sock:
            assert echo_roundtrip(sock, b"x" * size) == b"x" * size
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert _closed_by_peer(raw, within=3.0)
    assert eventually(lambda: control.stats().get(spec.listener_id).active == 0, timeout=5)
    counters = control.stats().get(spec.listener_id)
    assert counters.total == 4
    assert (counters.bytes_in, counters.bytes_out) == (11100, 11100)
    assert counters.failure("tls_error") == 1
    assert counters.handshakes == 3
    registry = CollectorRegistry()
    registry.register(OffloadCollector(control))
    text = generate_latest(registry).decode()
    lid = spec.listener_id
    assert f'certwatch_offload_connections_total{{listener_id="{lid}"}} 4.0' in text
    assert f'certwatch_offload_connections_active{{listener_id="{lid}"}} 0.0' in text
    assert f'certwatch_offload_bytes_total{{direction="in",listener_id="{lid}"}} 11100.0' in text
    assert (
        f'certwatch_offload_handshake_failures_total{{listener_id="{lid}",reason="tls_error"}} 1.0'
        in text
    )
    assert f'certwatch_offload_handshake_duration_seconds_count{{listener_id="{lid}"}} 3.0' in text


def test_ipv6_listener(control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]) -> None:
    """A listener on ::1 serves IPv6 clients."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    spec = listener(pki.leaf("v6.example.com"), backends, address="::1", port=port)
    control.apply(snapshot(spec))
    with (
        socket.create_connection(("::1", port), timeout=5) as raw,
        client_context().wrap_socket(raw) as sock,
    ):
        assert echo_roundtrip(sock) == b"ping"


def test_bytes_sent_while_the_backend_connects_all_arrive(pki: Pki, echo: EchoServer) -> None:
    """A client that sends 1 MiB at once while the first backend attempt hangs: the proxy
    holds what came (pausing the client past 64 KiB), and the backend it then reaches gets
    every byte in order."""
    payload = bytes(range(256)) * 4096
    with _unanswered_backend() as silent, ProxyControl(workers=1) as proxy:
        spec = listener(
            pki.leaf("early.example.com"),
            (silent, Backend("127.0.0.1", echo.port, 1)),
            connect_timeout=0.5,
        )
        proxy.apply(snapshot(spec))
        with tls_connect(spec.port, client_context()) as sock:
            sock.settimeout(10)
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = bytearray()
            while len(received) < len(payload):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
            sender.join()
        assert bytes(received) == payload
        assert proxy.stats().get(spec.listener_id).bytes_in == len(payload)
