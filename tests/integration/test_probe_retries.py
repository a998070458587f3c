"""Probes that do not flap: a refused handshake is retried within the probe, and the outcome
carries when it was taken."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from certwatch.scan.probe import ATTEMPTS, ProbeTarget, probe_sync
from tests.certfactory import Pki, make_pki

NAME = "flaky.example.com"


@contextmanager
def _flaky_server(pki: Pki, tmp_path: Path, refusals: int) -> Iterator[list[int]]:
    """A TLS server on 127.0.0.1 that closes its first `refusals` connections before the
    handshake, then serves; yields [port, connections seen so far]."""
    leaf = pki.leaf(NAME)
    (tmp_path / "chain.pem").write_text(leaf.chain_pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    state = [listener.getsockname()[1], 0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            state[1] += 1
            if state[1] <= refusals:
                raw.close()
                continue
            raw.settimeout(5)
            try:
                with ctx.wrap_socket(raw, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_two_refused_handshakes_then_success_is_a_success(tmp_path: Path) -> None:
    """A server that drops two connections and then serves is recorded as a success."""
    pki = make_pki("flaky")
    before = dt.datetime.now(dt.UTC)
    with _flaky_server(pki, tmp_path, refusals=2) as state:
        target = ProbeTarget("flaky", "127.0.0.1", state[0], NAME)
        [outcome] = probe_sync([target], [pki.root.cert], before, time_limit=3)
        assert state[1] == 3
    assert outcome.success and outcome.chain_complete and outcome.attempts == 3
    assert before < outcome.taken_at <= dt.datetime.now(dt.UTC)


def test_a_server_that_always_refuses_fails_after_the_attempts(tmp_path: Path) -> None:
    """A server that drops every connection is tried ATTEMPTS times, then recorded failed."""
    pki = make_pki("flaky")
    now = dt.datetime.now(dt.UTC)
    with _flaky_server(pki, tmp_path, refusals=100) as state:
        target = ProbeTarget("flaky", "127.0.0.1", state[0], NAME)
        [outcome] = probe_sync([target], [pki.root.cert], now, time_limit=3)
        assert state[1] == ATTEMPTS
    assert not outcome.success and outcome.attempts == ATTEMPTS
    assert outcome.error in (
        "connection closed during the TLS handshake",
        "cannot connect: Connection reset by peer",
    )


def test_a_working_server_is_probed_once(tmp_path: Path) -> None:
    """A probe that succeeds at once is not repeated."""
    pki = make_pki("steady")
    now = dt.datetime.now(dt.UTC)
    with _flaky_server(pki, tmp_path, refusals=0) as state:
        target = ProbeTarget("steady", "127.0.0.1", state[0], NAME)
        [outcome] = probe_sync([target], [pki.root.cert], now, time_limit=3)
        assert state[1] == 1
    assert outcome.success and outcome.attempts == 1
