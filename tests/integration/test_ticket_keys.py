"""Session ticket keys from the store: sealed, shared by every node, rotated every 12 hours
with the previous key still accepted, and resumption through the API on two nodes."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time
from sqlmodel import Session, select

from certwatch.api.http import create_app
from certwatch.app.service import Service
from certwatch.store.models import SessionTicketKey
from offload.echo import EchoServer
from offload.spec import Snapshot
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import Api, make_config
from tests.integration.offload.conftest import client_context, echo_roundtrip
from tests.support import free_port

START = dt.datetime(2026, 11, 27, 0, 30, tzinfo=dt.UTC)


class Recorder:
    """A data plane that takes every snapshot and remembers it."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def apply(self, snapshot: Snapshot) -> None:
        """Take `snapshot`."""
        self.snapshots.append(snapshot)

    def healthy(self) -> bool:
        """Always up."""
        return True


def _stored_epochs(service: Service) -> list[int]:
    with Session(service.engine) as session:
        return sorted(session.exec(select(SessionTicketKey.epoch)).all())


def test_nodes_of_one_store_serve_the_same_sealed_keys(tmp_path: Path, store_url: str) -> None:
    """Two nodes of one store hand their proxies the same ticket key, which the store keeps
    only sealed."""
    first, second = Recorder(), Recorder()
    one = Service(make_config(tmp_path, store_url), data_plane=first)
    two = Service(make_config(tmp_path, store_url), data_plane=second)
    try:
        one.call("CreateLoadBalancer", {"LoadBalancerName": "lb"})
        two.sync_data_plane()
        (key,) = first.snapshots[-1].ticket_keys
        assert second.snapshots[-1].ticket_keys == (key,)
        with Session(one.engine) as session:
            (row,) = session.exec(select(SessionTicketKey)).all()
        assert key.material not in row.key_sealed
        assert key.material.hex().encode() not in row.key_sealed
    finally:
        one.close()
        two.close()


def test_keys_rotate_every_12_hours_and_the_previous_one_stays_for_12_more(
    tmp_path: Path,
) -> None:
    """Without any change, the next sync after a 12-hour boundary hands the proxy a new key
    first and the previous one second; a key two periods old is gone from snapshot and store."""
    plane = Recorder()
    with freeze_time(START) as frozen:
        service = Service(make_config(tmp_path), data_plane=plane)
        try:
            service.sync_data_plane()
            (first,) = plane.snapshots[-1].ticket_keys
            frozen.tick(dt.timedelta(hours=6))
            service.sync_data_plane()
            assert plane.snapshots[-1].ticket_keys == (first,)
            frozen.tick(dt.timedelta(hours=6))
            service.sync_data_plane()
            second, previous = plane.snapshots[-1].ticket_keys
            assert previous == first and second != first
            assert plane.snapshots[-1].revision == plane.snapshots[0].revision
            frozen.tick(dt.timedelta(hours=12))
            service.sync_data_plane()
            third, previous = plane.snapshots[-1].ticket_keys
            assert previous == second and first not in (third, previous)
            assert len(_stored_epochs(service)) == 2
        finally:
            service.close()


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Api, Service]]:
    """Node one (API, two proxy workers) and node two (one worker) on one SQLite store."""
    with ProxyControl(2) as one_proxy, ProxyControl(1) as two_proxy:
        one = Service(make_config(tmp_path), data_plane=one_proxy)
        two = Service(make_config(tmp_path), data_plane=two_proxy)
        try:
            with TestClient(create_app(one)) as client:
                yield Api(client), two
        finally:
            one.close()
            two.close()


def _resumed(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> bool:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, session=session) as sock:
        assert echo_roundtrip(sock) == b"ping"
        return sock.session_reused


def test_a_ticket_resumes_on_both_nodes_and_after_a_swap(
    two_nodes: tuple[Api, Service],
) -> None:
    """A listener created through the API and served by two nodes (three workers on one port):
    a TLS 1.3 ticket resumes on at least 19 of 20 connections, also after the default
    certificate is replaced through the API."""
    api, two = two_nodes
    pki = make_pki()
    first, renewed = (pki.leaf("nodes.example.com", days=30 + i) for i in range(2))
    ids = [
        api.ok("UploadCertificate", **leaf.upload_params(f"c{i}"))["CertificateId"]
        for i, leaf in enumerate((first, renewed))
    ]
    with EchoServer() as echo:
        lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
        sg = api.ok(
            "CreateServerGroup",
            ServerGroupName="g",
            Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}],
        )["ServerGroupId"]
        port = free_port()
        lid = api.ok(
            "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=port,
            CertificateIds=[ids[0]], SecurityPolicyId="tls_cipher_policy_1_2_strict_with_1_3",
        )["ListenerId"]
        two.sync_data_plane()
        ctx = client_context(versions=(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3))
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw) as sock:
            assert echo_roundtrip(sock) == b"ping"
            session = sock.session
        assert sum(_resumed(port, ctx, session) for _ in range(20)) >= 19
        api.ok("UpdateListenerAttribute", ListenerId=lid, CertificateIds=[ids[1]])
        two.sync_data_plane()
        assert sum(_resumed(port, ctx, session) for _ in range(20)) >= 19
