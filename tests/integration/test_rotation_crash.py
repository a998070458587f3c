"""Crash safety of rotation: `kill -9` the real `certwatch serve` in the middle of rotations."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwatch.app.client import ApiFailure, Client
from offload.echo import EchoServer
from tests.certfactory import Issued, make_pki
from tests.integration.rotation_helpers import NAMES, served_fingerprint
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

KILLS = 8


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProcess]:
    """`certwatch serve` on free ports in its own process group (so kill -9 takes the workers
    too, as a machine crash would); killed at teardown if still running."""
    made = ServeProcess(tmp_path, '[scan]\ninterval = "1h"\n[rotation]\nauto = false\n')
    yield made
    if made.process is not None and made.process.poll() is None:
        kill(made)


def kill(node: ServeProcess) -> None:
    """SIGKILL the service and its proxy workers at once."""
    assert node.process is not None
    os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait(timeout=10)


def _setup(client: Client, pki: Any, echo_port: int) -> dict[str, list[str]]:
    """Two listeners; for each, renewals of rising expiry and one that fails the live check."""
    client.call(
        "UploadCertificate", CertificateName="root", CertificateType="Ca", Certificate=pki.root_pem
    )
    lb = client.call("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
    group = client.call(
        "CreateServerGroup",
        ServerGroupName="echo",
        Servers=[{"ServerIp": "127.0.0.1", "Port": echo_port, "Weight": 100}],
    )["ServerGroupId"]
    plans: dict[str, list[str]] = {}
    for _ in range(2):
        first: Issued = pki.leaf(*NAMES, days=20)
        cert = client.call("UploadCertificate", **first.upload_params("first"))["CertificateId"]
        listener = client.call(
            "CreateListener",
            LoadBalancerId=lb,
            ListenerProtocol="TCPSSL",
            ListenerPort=free_port(),
            ServerGroupId=group,
            CertificateIds=[cert],
        )["ListenerId"]
        renewals = [pki.leaf(*NAMES, days=30 + 10 * i) for i in range(15)]
        renewals.insert(3, pki.leaf(*NAMES, days=2000, client=True))
        plans[listener] = [
            client.call(
                "StageCertificate",
                Certificate=r.chain_pem,
                PrivateKey=r.key_pem,
                ListenerId=listener,
            )["StagedCertificateId"]
            for r in renewals
        ]
    return plans


def _drive(
    api: str, plans: dict[str, list[str]], stop: threading.Event, done: list[str]
) -> None:
    """Rotate each listener through its renewals, rolling back every other step; each call
    answered goes into `done`."""
    client = Client(api, timeout=30)
    try:
        _steps(client, plans, stop, done)
    finally:
        client.close()


def _steps(
    client: Client, plans: dict[str, list[str]], stop: threading.Event, done: list[str]
) -> None:
    for step in range(200):
        for listener, staged in plans.items():
            if stop.is_set():
                return
            try:
                if step % 2:
                    client.call("RollbackListenerCertificate", ListenerId=listener)
                else:
                    client.call(
                        "RotateListenerCertificate",
                        ListenerId=listener,
                        StagedCertificateId=staged[(step // 2) % len(staged)],
                    )
                done.append(listener)
            except ApiFailure:
                if stop.is_set():
                    return


def _settled_history(client: Client, listener: str) -> list[dict[str, Any]]:
    """The listener's history once no rotation is `InProgress` (bounded wait for recovery)."""
    deadline = time.monotonic() + 20
    while True:
        events: list[dict[str, Any]] = client.call("ListRotationEvents", ListenerId=listener)[
            "RotationEvents"
        ]
        if all(e["Result"] != "InProgress" for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def _check(client: Client, plans: dict[str, list[str]], root_pem: str) -> int:
    """Every listener serves its configured default, and its history agrees; return #events."""
    total = 0
    for listener in plans:
        events = _settled_history(client, listener)
        default = client.call("GetListenerAttribute", ListenerId=listener)["CertificateIds"][0]
        assert [e for e in events if e["Result"] == "InProgress"] == []
        settled = next(e for e in events if e["Result"] in ("Applied", "RolledBack"))
        outcome = settled[
            "NewCertificateId" if settled["Result"] == "Applied" else "OldCertificateId"
        ]
        assert outcome == default, [
            (e["Result"], e["OldCertificateId"], e["NewCertificateId"], e["Reason"])
            for e in events[:4]
        ]
        port = client.call("GetListenerAttribute", ListenerId=listener)["ListenerPort"]
        expected = client.call("GetCertificate", CertificateId=default)["Certificate"]
        for name in NAMES:
            assert served_fingerprint(port, name, root_pem, b"ok") == expected["Fingerprint"]
        total += len(events)
    return total


def test_kill_9_during_rotations_never_leaves_a_listener_without_its_certificate(
    node: ServeProcess,
) -> None:
    """After each kill -9 in the middle of rotations and rollbacks, the restarted service
    serves on every listener the certificate its configuration names, and the history has
    no unfinished rotation and ends in what is configured."""
    rng = random.Random(7)
    pki = make_pki("crash")
    with EchoServer() as echo:
        node.start(new_session=True)
        client = Client(node.url, timeout=30)
        plans = _setup(client, pki, echo.port)
        events_seen = 0
        for _ in range(KILLS):
            stop, done = threading.Event(), []
            driver = threading.Thread(target=_drive, args=(node.url, plans, stop, done))
            driver.start()
            # Kill at a random moment once the driver is under way, however slow the host.
            eventually(lambda done=done: len(done) >= 3, timeout=60)
            time.sleep(rng.uniform(0.0, 0.5))
            kill(node)
            stop.set()
            driver.join(timeout=30)
            node.start(new_session=True)
            events_seen = _check(client, plans, pki.root_pem)
        client.close()
    assert events_seen > 2 * KILLS  # the driver really rotated between the kills
