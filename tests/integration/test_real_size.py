"""Zero failures at the size users run: 40 listeners and 65+ certificates, writes under load,
and a worker killed under load."""

from __future__ import annotations

import dataclasses
import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from certwatch.pki.devpki import Issued, Pki, make_pki
from offload.echo import EchoServer
from offload.spec import Backend, CertChain, ListenerSpec, Snapshot
from offload.workers import ProxyControl
from tests.integration.load import HandshakeLoop, children, owners, still_echoes
from tests.integration.offload.conftest import client_context, leaf_fingerprint, tls_connect
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

LISTENERS = 40
ADDITIONAL = 25


class _Api:
    """POST /v1/<Action> against a running service; every call must succeed."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def ok(self, action: str, **params: object) -> dict[str, object]:
        response = self.client.post(f"/v1/{action}", json=params)
        assert response.status_code == 200, (action, response.text)
        return dict(response.json())

    def upload(self, issued: Issued, name: str) -> str:
        return str(self.ok("UploadCertificate", **issued.upload_params(name))["CertificateId"])


def _worker_pids(serve_pid: int) -> list[int]:
    pids = []
    for pid in children(serve_pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                pids.append(pid)
    return sorted(pids)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProcess]:
    """A real `certwatch serve` with two proxy workers."""
    node = ServeProcess(tmp_path, workers=2, toml='[scan]\ninterval = "1h"\n')
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture
def api(node: ServeProcess) -> Iterator[_Api]:
    """An HTTP client of the node's API."""
    client = _Api(node.url)
    yield client
    client.client.close()


def test_thirty_writes_at_real_size_fail_nothing(node: ServeProcess, api: _Api) -> None:
    """With 40 listeners (one holding 25 additional certificates) and 66 certificates, 30
    mixed writes all succeed while connections are held and two handshake loops run: no held
    connection drops, no handshake fails, and no worker process is replaced."""
    pki = make_pki("real size")
    with EchoServer() as echo:
        sg = api.ok(
            "CreateServerGroup", ServerGroupName="echo",
            Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 100}],
        )["ServerGroupId"]
        big_lb = api.ok("CreateLoadBalancer", LoadBalancerName="big")["LoadBalancerId"]
        small_lb = api.ok("CreateLoadBalancer", LoadBalancerName="small")["LoadBalancerId"]
        names = [f"site{i}.example.com" for i in range(ADDITIONAL)]
        big_default = api.upload(pki.leaf("big.example.com"), "big")
        big_port = free_port()
        big = str(api.ok(
            "CreateListener", LoadBalancerId=big_lb, ServerGroupId=sg, ListenerPort=big_port,
            CertificateIds=[big_default],
        )["ListenerId"])
        extra = [api.upload(pki.leaf(n), n) for n in names]
        for start in range(0, ADDITIONAL, 15):
            api.ok(
                "AssociateAdditionalCertificatesWithListener", ListenerId=big,
                AdditionalCertificateIds=extra[start : start + 15],
            )
        ports, small = [], []
        for i in range(LISTENERS - 1):
            ports.append(free_port())
            cid = api.upload(pki.leaf(f"small{i}.example.com"), f"small{i}")
            small.append(str(api.ok(
                "CreateListener", LoadBalancerId=small_lb, ServerGroupId=sg,
                ListenerPort=ports[-1], CertificateIds=[cid],
            )["ListenerId"]))
        ctx = client_context(pki.root_pem)
        held = [tls_connect(big_port, ctx, n) for n in names[:10]]
        held += [tls_connect(p, ctx, f"small{i}.example.com") for i, p in enumerate(ports)]
        workers = _worker_pids(node.process.pid)  # type: ignore[union-attr]
        assert len(workers) == 2
        renewed = {n: pki.leaf(n, days=200) for n in names[:5]}
        with (
            # The renewed names are briefly served by the default between their two calls.
            HandshakeLoop(big_port, ctx, [*names[5:], "big.example.com"]) as loop_big,
            HandshakeLoop(ports[0], ctx, ["small0.example.com"]) as loop_small,
        ):
            for n, leaf in renewed.items():  # 10 writes: five uploads, five associations
                api.ok(
                    "DisassociateAdditionalCertificatesWithListener", ListenerId=big,
                    AdditionalCertificateIds=[extra[names.index(n)]],
                )
                api.ok(
                    "AssociateAdditionalCertificatesWithListener", ListenerId=big,
                    AdditionalCertificateIds=[api.upload(leaf, f"{n}-renewed")],
                )
            for i in range(1, 6):  # 10 writes: five new defaults on small listeners
                cid = api.upload(pki.leaf(f"small{i}.example.com", days=300), f"new{i}")
                api.ok("UpdateListenerAttribute", ListenerId=small[i], CertificateIds=[cid])
            for i in range(5):  # 10 writes that change nothing served, and policy switches
                api.ok("CreateLoadBalancer", LoadBalancerName=f"idle{i}")
                api.ok(
                    "UpdateListenerAttribute", ListenerId=small[10 + i],
                    SecurityPolicyId="tls_cipher_policy_1_2_strict_with_1_3",
                )
            time.sleep(0.5)
        assert loop_big.failures == [] and loop_small.failures == []
        assert loop_big.done > 0 and loop_small.done > 0
        assert [still_echoes(s) for s in held] == [True] * len(held)
        assert _worker_pids(node.process.pid) == workers  # type: ignore[union-attr]
        for n, leaf in renewed.items():
            for _ in range(2):  # either worker
                with tls_connect(big_port, ctx, n) as sock:
                    assert leaf_fingerprint(sock) == leaf.fingerprint
        for sock in held:
            sock.close()
    assert "replacing offload worker" not in node.output()


def _inventory(pki: Pki, backends: tuple[Backend, ...]) -> list[ListenerSpec]:
    """40 listeners, the first with 25 additional certificates."""
    def chain(name: str) -> CertChain:
        leaf = pki.leaf(name)
        return CertChain(leaf.chain_pem, leaf.key_pem, (name,))

    specs = [
        ListenerSpec(
            f"lsn-{i:016x}", "127.0.0.1", free_port(), chain(f"l{i}.example.com"), backends,
            tls_versions=("TLSv1.2", "TLSv1.3"),
        )
        for i in range(LISTENERS)
    ]
    specs[0] = dataclasses.replace(
        specs[0], additional_certs=tuple(chain(f"a{j}.example.com") for j in range(ADDITIONAL))
    )
    return specs


def test_a_worker_killed_under_load_is_replaced_and_the_other_drops_nothing() -> None:
    """kill -9 of one of two workers at real size: the other worker's connections all
    survive, handshakes fail only while the killed one goes, the replacement serves every
    listener, and the next change reaches both workers."""
    pki = make_pki("kill")
    ctx = client_context(pki.root_pem)
    with EchoServer() as echo, ProxyControl(workers=2) as proxy:
        specs = _inventory(pki, (Backend("127.0.0.1", echo.port),))
        proxy.apply(Snapshot(1, tuple(specs)))
        held = [tls_connect(s.port, ctx, f"l{i}.example.com") for i, s in enumerate(specs)]
        held += [tls_connect(specs[0].port, ctx, f"a{j}.example.com") for j in range(10)]
        try:
            pids = proxy.worker_pids()
            held_by = owners(held, pids)
            assert set(held_by) == set(pids)  # both workers hold some
            victim, survivor = pids
            with HandshakeLoop(specs[0].port, ctx, ["l0.example.com", "a3.example.com"]) as loop:
                time.sleep(0.3)
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                assert eventually(
                    lambda: len(proxy.worker_pids()) == 2 and victim not in proxy.worker_pids()
                    and proxy.healthy(),
                    timeout=20,
                )
                replaced_at = time.monotonic()
                time.sleep(0.5)
            late = [when for when, _ in loop.failures if when > replaced_at + 0.1]
            assert late == [] and loop.done > 0
            assert all(killed_at <= when for when, _ in loop.failures)
            alive = [still_echoes(s) for s in held]
            assert [ok for ok, pid in zip(alive, held_by, strict=True) if pid == survivor] == [
                True
            ] * held_by.count(survivor)
            new_leaf = pki.leaf("l5.example.com", days=400)
            specs[5] = dataclasses.replace(
                specs[5], default_cert=CertChain(new_leaf.chain_pem, new_leaf.key_pem)
            )
            proxy.apply(Snapshot(2, tuple(specs)))
            for _ in range(8):  # both workers, the replacement included
                with tls_connect(specs[5].port, ctx, "l5.example.com") as sock:
                    assert leaf_fingerprint(sock) == new_leaf.fingerprint
            for i in (1, LISTENERS - 1):
                with tls_connect(specs[i].port, ctx, f"l{i}.example.com") as sock:
                    assert still_echoes(sock)
        finally:
            for sock in held:
                try:
                    sock.close()
                except (OSError, ssl.SSLError):
                    pass
