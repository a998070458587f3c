"""Changes stamp the listeners they touch, and snapshots are built from the stamps alone."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from certwatch import errors
from certwatch.app.service import Service
from certwatch.changes.snapshot import SnapshotBuilder, current_revision
from certwatch.store.db import transaction
from certwatch.store.models import Listener
from offload.spec import HealthCheck, Snapshot
from offload.workers import ProxyControl
from tests.certfactory import make_pki
from tests.conftest import make_config
from tests.integration.rotation_helpers import served_fingerprint
from tests.support import free_port


def _stamps(service: Service) -> dict[str, int]:
    with Session(service.engine) as session:
        return {row.id: row.revision for row in session.exec(select(Listener))}


def _build(service: Service, builder: SnapshotBuilder) -> Snapshot:
    with transaction(service.engine) as session:
        return builder.build(session, current_revision(session))


def test_each_kind_of_change_stamps_only_its_listeners(service: Service) -> None:
    """Swaps, SNI certificates, server group servers and health checks, policies, stop/start
    and deletes stamp exactly the listeners they affect; another node's builder, reading only
    stamped listeners, builds what a fresh builder reading everything builds, and keeps the
    very same spec objects for the listeners nobody touched."""
    pki = make_pki()
    call = service.call
    certs = [
        call("UploadCertificate", pki.leaf(f"h{i}.example.com").upload_params(f"c{i}"))[
            "CertificateId"
        ]
        for i in range(5)
    ]
    lb = call("CreateLoadBalancer", {"LoadBalancerName": "lb"})["LoadBalancerId"]
    groups = [
        call("CreateServerGroup", {"ServerGroupName": f"g{i}"})["ServerGroupId"] for i in range(2)
    ]

    def listener(group: str, cert: str) -> str:
        return str(call("CreateListener", {
            "LoadBalancerId": lb, "ServerGroupId": group, "ListenerPort": free_port(),
            "CertificateIds": [cert],
        })["ListenerId"])

    a, b = listener(groups[0], certs[0]), listener(groups[0], certs[1])
    c = listener(groups[1], certs[2])
    policy = call("CreateSecurityPolicy", {
        "SecurityPolicyName": "strict", "TlsVersions": ["TLSv1.3"],
        "Ciphers": ["TLS_AES_128_GCM_SHA256"],
    })["SecurityPolicyId"]
    node = SnapshotBuilder(service.keybox, service.config.proxy)
    seen = {spec.listener_id: spec for spec in _build(service, node).listeners}
    steps: list[tuple[str, Callable[[], Any], set[str]]] = [
        ("swap", lambda: call("UpdateListenerAttribute", {
            "ListenerId": a, "CertificateIds": [certs[3]]}), {a}),
        ("sni", lambda: call("AssociateAdditionalCertificatesWithListener", {
            "ListenerId": b, "AdditionalCertificateIds": [certs[4]]}), {b}),
        ("servers", lambda: call("AddServersToServerGroup", {
            "ServerGroupId": groups[0],
            "Servers": [{"ServerIp": "127.0.0.1", "Port": 9, "Weight": 1}]}), {a, b}),
        ("health check", lambda: call("UpdateServerGroupAttribute", {
            "ServerGroupId": groups[0],
            "HealthCheckConfig": {"HealthCheckEnabled": True, "HealthCheckInterval": 2,
                                  "HealthCheckConnectTimeout": 1}}), {a, b}),
        ("policy", lambda: call("UpdateListenerAttribute", {
            "ListenerId": c, "SecurityPolicyId": policy}), {c}),
        ("stop", lambda: call("StopListener", {"ListenerId": c}), {c}),
        ("start", lambda: call("StartListener", {"ListenerId": c}), {c}),
        ("upload", lambda: call("UploadCertificate", pki.leaf("x.example.com").upload_params("x")),
         set()),
        ("delete", lambda: call("DeleteListener", {"ListenerId": b}), set()),
    ]
    for label, step, expected in steps:
        before = _stamps(service)
        step()
        after = _stamps(service)
        moved = {lid for lid in after if after[lid] != before.get(lid)}
        assert moved == expected, label
        snapshot = _build(service, node)
        truth = _build(service, SnapshotBuilder(service.keybox, service.config.proxy))
        assert snapshot.listeners == truth.listeners, label
        for spec in snapshot.listeners:
            if spec.listener_id not in expected and spec.listener_id in seen:
                assert spec is seen[spec.listener_id], (label, spec.listener_id)
        seen = {spec.listener_id: spec for spec in snapshot.listeners}
    assert set(seen) == {a, c}
    assert seen[c].tls_versions == ("TLSv1.3",)
    assert seen[a].backends and seen[a].default_cert.names == ("h3.example.com",)
    assert seen[a].server_group_id == groups[0]
    assert seen[a].health_check == HealthCheck(interval=2.0, connect_timeout=1.0)
    assert seen[c].health_check is None


def test_a_refused_change_leaves_no_stale_spec_behind(tmp_path: Path) -> None:
    """A swap the proxy could not take is rolled back with its stamp; the next swap of the same
    listener reuses that revision number and is still served (not the refused one)."""
    pki = make_pki()
    with ProxyControl(1, ack_timeout=1.0) as proxy:
        service = Service(make_config(tmp_path), data_plane=proxy)
        try:
            service.sync_data_plane()
            leaves = [pki.leaf("a.example.com") for _ in range(3)]
            certs = [
                service.call("UploadCertificate", leaf.upload_params(f"c{i}"))["CertificateId"]
                for i, leaf in enumerate(leaves)
            ]
            lb = service.call("CreateLoadBalancer", {"LoadBalancerName": "lb"})["LoadBalancerId"]
            group = service.call("CreateServerGroup", {"ServerGroupName": "g"})["ServerGroupId"]
            port = free_port()
            lid = service.call("CreateListener", {
                "LoadBalancerId": lb, "ServerGroupId": group, "ListenerPort": port,
                "CertificateIds": [certs[0]],
            })["ListenerId"]
            (pid,) = proxy.worker_pids()
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(errors.ProxyUnavailable):
                    service.call("UpdateListenerAttribute", {
                        "ListenerId": lid, "CertificateIds": [certs[1]]})
            finally:
                os.kill(pid, signal.SIGCONT)
            service.call(
                "UpdateListenerAttribute", {"ListenerId": lid, "CertificateIds": [certs[2]]}
            )
            served = served_fingerprint(port, "a.example.com", pki.root_pem)
            assert served == leaves[2].fingerprint
        finally:
            service.close()
