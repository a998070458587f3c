"""ProxyControl: apply errors, live swaps, removal, restarts after crashes, stop and drain."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import socket
import ssl
import threading
import time

import pytest

from offload.errors import ApplyError, ApplyTimeout
from offload.spec import Backend, CertChain
from offload.workers import ProxyControl
from tests.certfactory import Pki
from tests.integration.offload.conftest import (
    chain,
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    listener,
    snapshot,
    tls_connect,
)
from tests.support import eventually, free_port


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_port_taken_by_another_socket_raises_apply_error(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A listener whose port is taken fails with its id, address and OS reason; others serve."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        good = listener(pki.leaf("good.example.com"), backends)
        bad = listener(pki.leaf("bad.example.com"), backends, port=taken)
        with pytest.raises(ApplyError) as caught:
            control.apply(snapshot(good, bad))
    assert caught.value.listener_id == bad.listener_id
    assert f"127.0.0.1:{taken}" in str(caught.value)
    assert "Address already in use" in str(caught.value)
    with tls_connect(good.port, client_context()) as sock:
        assert echo_roundtrip(sock) == b"ping"


def test_bad_key_raises_apply_error_and_keeps_serving_the_old_certificate(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A replacement certificate with the wrong key is refused; the previous one stays served."""
    old = pki.leaf("keep.example.com")
    spec = listener(old, backends)
    control.apply(snapshot(spec))
    new, other = pki.leaf("keep.example.com"), pki.leaf("other.example.com")
    broken = dataclasses.replace(spec, default_cert=CertChain(new.chain_pem, other.key_pem))
    with pytest.raises(ApplyError) as caught:
        control.apply(snapshot(broken))
    assert caught.value.listener_id == spec.listener_id
    assert "SSL error" in str(caught.value)
    with tls_connect(spec.port, client_context()) as sock:
        assert leaf_fingerprint(sock) == old.fingerprint
    previous = snapshot(spec)
    control.apply(previous)
    assert control.current_revision == previous.revision


def test_certificate_swap_under_load_fails_no_connection(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """20 certificate swaps under load: no failures, old conn lives, new cert seen at once."""
    leaves = [pki.leaf("swap.example.com") for _ in range(21)]
    spec = listener(leaves[0], backends)
    control.apply(snapshot(spec))
    stop = threading.Event()
    failures: list[str] = []
    successes = [0] * 4

    def hammer(slot: int) -> None:
        ctx = client_context(pki.root_pem)
        while not stop.is_set():
            try:
                with tls_connect(spec.port, ctx, "swap.example.com") as sock:
                    if echo_roundtrip(sock) != b"ping":
                        failures.append("no echo")
                successes[slot] += 1
            except (OSError, ssl.SSLError) as exc:
                failures.append(repr(exc))

    long_lived = tls_connect(spec.port, client_context(pki.root_pem), "swap.example.com")
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for leaf in leaves[1:]:
            spec = dataclasses.replace(spec, default_cert=chain(leaf))
            control.apply(snapshot(spec))
            assert control.current_revision > 0
            with tls_connect(spec.port, client_context(pki.root_pem), "swap.example.com") as s:
                assert leaf_fingerprint(s) == leaf.fingerprint
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    with long_lived:
        assert leaf_fingerprint(long_lived) == leaves[0].fingerprint
        assert echo_roundtrip(long_lived, b"still here") == b"still here"
    assert failures == []
    assert all(n > 0 for n in successes)


def test_removed_listener_stops_accepting_but_open_connection_finishes(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A listener left out of the snapshot refuses new clients; an open connection still echoes."""
    spec = listener(pki.leaf("gone.example.com"), backends)
    control.apply(snapshot(spec))
    with tls_connect(spec.port, client_context()) as sock:
        control.apply(snapshot())
        assert _refused(spec.port)
        assert echo_roundtrip(sock, b"after") == b"after"


def test_moved_listener_serves_on_its_new_port(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """Changing a listener's port rebinds: the old port refuses, the new one serves."""
    spec = listener(pki.leaf("move.example.com"), backends)
    control.apply(snapshot(spec))
    moved = dataclasses.replace(spec, port=free_port())
    control.apply(snapshot(moved))
    assert _refused(spec.port)
    with tls_connect(moved.port, client_context()) as sock:
        assert echo_roundtrip(sock) == b"ping"


def test_killed_worker_is_restarted_with_the_current_snapshot(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """After SIGKILL of the only worker, a new one comes up and serves the listener again."""
    spec = listener(pki.leaf("crash.example.com"), backends)
    with ProxyControl(workers=1) as proxy:
        proxy.apply(snapshot(spec))
        [pid] = proxy.worker_pids()
        os.kill(pid, signal.SIGKILL)
        assert eventually(
            lambda: proxy.worker_pids() not in ([pid], []) and proxy.healthy(), timeout=10
        )
        with tls_connect(spec.port, client_context()) as sock:
            assert echo_roundtrip(sock) == b"ping"


def _children_named(name: str) -> set[int]:
    """Pids of this process's children whose process title is `name`."""
    return {child.pid for child in multiprocessing.active_children() if child.name == name}


def test_a_replacement_worker_holds_up_no_change_and_starts_on_the_latest(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """While a killed worker's replacement is still preparing its state (held stopped
    here), changes are taken by the other worker and return; the replacement then starts
    serving the latest change, not the state it began preparing."""
    spec = listener(pki.leaf("swap.example.com"), backends)
    new = pki.leaf("swap.example.com")
    with ProxyControl(workers=2) as proxy:
        proxy.apply(snapshot(spec))
        first, second = proxy.worker_pids()
        before = _children_named("offload-worker-0")  # this and earlier tests' children
        os.kill(first, signal.SIGKILL)
        fresh: set[int] = set()
        assert eventually(
            lambda: bool(fresh.update(_children_named("offload-worker-0") - before) or fresh),
            timeout=10,
        )
        (replacement,) = fresh
        os.kill(replacement, signal.SIGSTOP)
        try:
            swapped = snapshot(dataclasses.replace(spec, default_cert=chain(new)))
            applier = threading.Thread(target=proxy.apply, args=(swapped,))
            applier.start()
            applier.join(timeout=10)
            assert not applier.is_alive()  # the change did not wait for the replacement
        finally:
            os.kill(replacement, signal.SIGCONT)
        ok = eventually(
            lambda: sorted(proxy.worker_pids()) == sorted([replacement, second])
            and proxy.healthy(),
            timeout=15,
        )
        assert ok, (proxy.worker_pids(), replacement)
        served = set()
        for _ in range(40):
            with tls_connect(spec.port, client_context()) as sock:
                served.add(leaf_fingerprint(sock))
        assert served == {new.fingerprint}


def test_stalled_worker_raises_apply_timeout(pki: Pki, backends: tuple[Backend, ...]) -> None:
    """A worker that does not answer makes apply raise ApplyTimeout and healthy() false."""
    spec = listener(pki.leaf("stall.example.com"), backends)
    with ProxyControl(workers=1, ack_timeout=0.5) as proxy:
        [pid] = proxy.worker_pids()
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(ApplyTimeout):
                proxy.apply(snapshot(spec))
            assert not proxy.healthy()
        finally:
            os.kill(pid, signal.SIGCONT)
        assert eventually(proxy.healthy, timeout=10)
        proxy.apply(snapshot(spec))
        with tls_connect(spec.port, client_context()) as sock:
            assert echo_roundtrip(sock) == b"ping"


def test_stop_refuses_new_clients_and_drains_open_ones(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """stop() refuses new clients at once, reports unhealthy, lets an open one finish."""
    spec = listener(pki.leaf("drain.example.com"), backends)
    proxy = ProxyControl(workers=2)
    proxy.start()
    proxy.apply(snapshot(spec))
    sock = tls_connect(spec.port, client_context())
    stopper = threading.Thread(target=proxy.stop, args=(10.0,))
    started = time.monotonic()
    stopper.start()
    assert eventually(lambda: _refused(spec.port), timeout=10)
    asked = time.monotonic()
    assert not proxy.healthy()
    assert time.monotonic() - asked < 1.0
    assert echo_roundtrip(sock, b"draining") == b"draining"
    sock.close()
    stopper.join(timeout=15)
    assert not stopper.is_alive()
    assert time.monotonic() - started < 5
    assert not proxy.healthy()


def test_stop_closes_connections_after_drain_timeout(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """An open connection that outlives the drain timeout is closed when stop() returns."""
    spec = listener(pki.leaf("drain2.example.com"), backends)
    proxy = ProxyControl(workers=1)
    proxy.start()
    proxy.apply(snapshot(spec))
    with tls_connect(spec.port, client_context()) as sock:
        started = time.monotonic()
        proxy.stop(drain_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
        sock.settimeout(2)
        try:
            assert sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            pass


def test_apply_stats_and_healthy_are_safe_from_many_threads(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """Threads calling stats() and healthy() while others apply get consistent answers."""
    specs = [listener(pki.leaf("threads.example.com"), backends) for _ in range(3)]
    errors: list[str] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            try:
                if not control.healthy():
                    errors.append("unhealthy")
                control.stats()
            except Exception as exc:
                errors.append(repr(exc))

    def apply_all(offset: int) -> None:
        try:
            for i in range(5):
                control.apply(snapshot(specs[(i + offset) % len(specs)]))
        except Exception as exc:
            errors.append(repr(exc))

    observers = [threading.Thread(target=observe) for _ in range(3)]
    appliers = [threading.Thread(target=apply_all, args=(i,)) for i in range(2)]
    for thread in observers + appliers:
        thread.start()
    for thread in appliers:
        thread.join()
    stop.set()
    for thread in observers:
        thread.join()
    assert errors == []
    final = snapshot(specs[0])
    control.apply(final)
    assert control.current_revision == final.revision
    with tls_connect(specs[0].port, client_context()) as sock:
        assert echo_roundtrip(sock) == b"ping"


def test_a_connection_the_drain_deadline_cuts_ends_with_close_notify(
    pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A TLS connection still open when the drain deadline passes is ended with close_notify:
    the client reads a clean end of stream, not a truncation (`SSLEOFError`)."""
    spec = listener(pki.leaf("cut.example.com"), backends)
    proxy = ProxyControl(workers=1)
    proxy.start()
    proxy.apply(snapshot(spec))
    raw = socket.create_connection(("127.0.0.1", spec.port), timeout=5)
    # Ragged ends not suppressed: a cut without close_notify raises SSLEOFError here.
    sock = client_context().wrap_socket(raw, suppress_ragged_eofs=False)
    try:
        assert echo_roundtrip(sock) == b"ping"
        started = time.monotonic()
        proxy.stop(drain_timeout=0.5)
        assert time.monotonic() - started < 5
        assert sock.recv(16) == b""
    finally:
        sock.close()
