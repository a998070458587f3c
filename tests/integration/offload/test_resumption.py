"""Session resumption on a two-worker listener: wherever the client lands, across certificate
swaps and ticket key rotations, and never past a replaced CA."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from offload.export import OffloadCollector
from offload.spec import Backend, TicketKey
from offload.workers import ProxyControl
from tests.certfactory import Issued, Pki, make_pki
from tests.integration.offload.conftest import (
    chain,
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    listener,
    snapshot,
)
from tests.support import eventually

TRIES = 20
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def _connect(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession, bool, str]:
    """One connection with an echo round trip: its session (tickets included), whether it
    resumed `session`, and the served leaf's fingerprint."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, session=session) as sock:
        assert echo_roundtrip(sock) == b"ping"
        assert sock.session is not None
        return sock.session, sock.session_reused, leaf_fingerprint(sock)


def _resumed(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession) -> int:
    """How many of TRIES new connections resume `session`."""
    return sum(_connect(port, ctx, session)[1] for _ in range(TRIES))


def _client(version: ssl.TLSVersion, **kw: object) -> ssl.SSLContext:
    return client_context(versions=(version, version), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", VERSIONS)
def test_tickets_resume_on_every_worker(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], version: ssl.TLSVersion
) -> None:
    """A ticket from one worker resumes on both: at least 19 of 20 connections resume, and
    the resumptions are counted and exported."""
    assert len(control.worker_pids()) == 2
    spec = listener(pki.leaf("resume.example.com"), backends)
    control.apply(snapshot(spec))
    ctx = _client(version)
    session, _, _ = _connect(spec.port, ctx)
    assert _resumed(spec.port, ctx, session) >= TRIES - 1
    resumed = control.stats().get(spec.listener_id).resumptions
    assert TRIES - 1 <= resumed <= TRIES
    registry = CollectorRegistry()
    registry.register(OffloadCollector(control))
    text = generate_latest(registry).decode()
    lid = spec.listener_id
    assert f'certwatch_offload_tls_resumptions_total{{listener_id="{lid}"}} {resumed}.0' in text


@pytest.mark.parametrize("version", VERSIONS)
def test_a_client_resuming_with_its_newest_session_resumes_every_time(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], version: ssl.TLSVersion
) -> None:
    """A client that keeps the session of its last connection (as browsers do) resumes on
    every reconnection, and each resumed connection hands it a fresh ticket (TLS 1.3
    tickets are meant for one use: RFC 8446 C.4)."""
    spec = listener(pki.leaf("chain.example.com"), backends)
    control.apply(snapshot(spec))
    ctx = _client(version)
    session, _, _ = _connect(spec.port, ctx)
    resumed, fresh = 0, 0
    for _ in range(TRIES):
        newest, reused, _ = _connect(spec.port, ctx, session)
        resumed += reused
        fresh += newest.id != session.id
        session = newest
    assert resumed == TRIES
    if version == ssl.TLSVersion.TLSv1_3:
        assert fresh == TRIES


@pytest.mark.parametrize("version", VERSIONS)
def test_tickets_from_before_a_certificate_swap_still_resume(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], version: ssl.TLSVersion
) -> None:
    """After the default certificate is replaced (the contexts rebuilt), tickets issued
    before still resume, while a full handshake gets the new certificate."""
    spec = listener(pki.leaf("swap.example.com"), backends)
    control.apply(snapshot(spec))
    ctx = _client(version)
    session, _, old_leaf = _connect(spec.port, ctx)
    renewed = chain(pki.leaf("swap.example.com"))
    control.apply(snapshot(dataclasses.replace(spec, default_cert=renewed)))
    _, _, new_leaf = _connect(spec.port, ctx)
    assert new_leaf != old_leaf
    assert _resumed(spec.port, ctx, session) >= TRIES - 1


@pytest.mark.parametrize("version", VERSIONS)
def test_rotated_keys_accept_the_previous_one_only(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], version: ssl.TLSVersion
) -> None:
    """After one rotation a ticket under the previous key resumes (and is renewed under the
    new one); after a second rotation it no longer does."""
    first, second, third = (TicketKey.generate() for _ in range(3))
    spec = listener(pki.leaf("rotate.example.com"), backends)
    control.apply(dataclasses.replace(snapshot(spec), ticket_keys=(first,)))
    ctx = _client(version)
    session, _, _ = _connect(spec.port, ctx)
    control.apply(dataclasses.replace(snapshot(spec), ticket_keys=(second, first)))
    renewed, reused, _ = _connect(spec.port, ctx, session)
    assert reused
    assert _resumed(spec.port, ctx, session) >= TRIES - 1
    control.apply(dataclasses.replace(snapshot(spec), ticket_keys=(third, second)))
    assert _resumed(spec.port, ctx, session) == 0
    assert _resumed(spec.port, ctx, renewed) >= TRIES - 1


def test_a_ticket_resumes_only_on_the_listener_that_issued_it(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """Two listeners share the ticket keys, yet a session of one never resumes on the other."""
    one = listener(pki.leaf("one.example.com"), backends)
    two = listener(pki.leaf("two.example.com"), backends)
    control.apply(snapshot(one, two))
    ctx = _client(ssl.TLSVersion.TLSv1_3)
    session, _, _ = _connect(one.port, ctx)
    assert _resumed(two.port, ctx, session) == 0
    assert _resumed(one.port, ctx, session) >= TRIES - 1


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_is_not_resumed_past_a_replaced_ca(
    control: ProxyControl,
    pki: Pki,
    backends: tuple[Backend, ...],
    tmp_path: Path,
    version: ssl.TLSVersion,
) -> None:
    """On an mTLS listener, a client of the old CA resumes while that CA stands; once the CA
    is replaced its session is not resumed, so its certificate is checked and refused."""
    old_ca, new_ca = make_pki("old clients"), make_pki("new clients")
    alice: Issued = old_ca.leaf("alice", client=True)
    spec = listener(pki.leaf("mtls-resume.example.com"), backends, ca_pem=old_ca.root_pem)
    control.apply(snapshot(spec))
    ctx = _client(version, cert=alice, tmp_dir=str(tmp_path))
    session, _, _ = _connect(spec.port, ctx)
    assert _resumed(spec.port, ctx, session) >= TRIES - 1
    control.apply(snapshot(dataclasses.replace(spec, ca_pem=new_ca.root_pem)))
    before = control.stats().get(spec.listener_id).failure("client_cert")
    for _ in range(4):
        with pytest.raises((ssl.SSLError, OSError)):
            _connect(spec.port, ctx, session)
    assert eventually(
        lambda: control.stats().get(spec.listener_id).failure("client_cert") >= before + 4,
        timeout=5,
    )
