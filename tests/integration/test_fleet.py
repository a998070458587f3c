"""Several real `certwatch serve` nodes on one PostgreSQL store, sharing listener ports, under
concurrency and faults: races, lost notifications, a killed, frozen or cut-off leader, a store
outage, scans and rotations through every node."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from certwatch.pki.devpki import Pki, make_pki
from certwatch.store.db import KeyBox
from offload.echo import EchoServer
from tests.integration.offload.conftest import client_context, leaf_fingerprint, tls_connect
from tests.integration.postgres import Postgres
from tests.integration.relay import Relay
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

NAME = "fleet.example.com"


@dataclass
class Fleet:
    """Three nodes, the store they share, a listener they all serve, and its certificates."""

    nodes: list[ServeProcess]
    store_url: str
    pki: Pki
    listener_id: str
    port: int
    certificates: list[str]
    fingerprints: list[str]

    def call(self, index: int, action: str, **params: object) -> httpx.Response:
        """POST /v1/<action> on node `index`."""
        url = f"{self.nodes[index].url}/v1/{action}"
        return httpx.post(url, json=params, timeout=60)

    def ok(self, index: int, action: str, **params: object) -> dict[str, object]:
        """Call and require 200."""
        response = self.call(index, action, **params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def gauge(self, index: int, name: str) -> float | None:
        """One unlabelled gauge of node `index`'s /metrics (None when it does not answer)."""
        try:
            body = httpx.get(f"{self.nodes[index].url}/metrics", timeout=3).text
        except httpx.HTTPError:
            return None
        for line in body.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def leaders(self, among: list[int]) -> list[int]:
        """The nodes among `among` that say they lead."""
        return [i for i in among if self.gauge(i, "certwatch_node_leader") == 1.0]

    def defaults(self) -> list[str]:
        """The listener's default certificates, as the store holds them."""
        listed = self.ok(0, "ListListenerCertificates", ListenerId=self.listener_id)
        return [c["CertificateId"] for c in listed["Certificates"] if c["IsDefault"]]  # type: ignore[index, union-attr]

    def served(self, handshakes: int = 12) -> set[str]:
        """Leaf fingerprints of several handshakes on the shared port (any node answers)."""
        seen = set()
        for _ in range(handshakes):
            with tls_connect(self.port, client_context(self.pki.root_pem), NAME) as sock:
                seen.add(leaf_fingerprint(sock))
        return seen


def _start_fleet(
    tmp_path: Path,
    store_url: str,
    echo_port: int,
    relays: dict[int, Relay] | None = None,
    commands: tuple[str, ...] = ("serve", "serve", "serve"),
    toml: str = "",
) -> Fleet:
    """Nodes running `commands` on one store (node 0 answers the set-up calls), and the
    fleet's listener with the first of its four certificates."""
    key_file = tmp_path / "secrets.key"
    KeyBox.from_file(key_file)
    nodes = []
    for i in range(len(commands)):
        url = store_url
        if relays and i in relays:
            url = make_url(store_url).set(port=relays[i].port).render_as_string(
                hide_password=False
            )
        home = tmp_path / f"node{i}"
        home.mkdir()
        nodes.append(
            ServeProcess(
                home,
                toml=(
                    "reload_interval = 2\n"
                    f'[store]\nurl = "{url}"\n[secrets]\nkey_file = "{key_file}"\n'
                    '[scan]\ninterval = "1h"\nprobe_timeout = "3s"\n[rotation]\nauto = false\n'
                    + toml
                ),
            )
        )
    for node, command in zip(nodes, commands, strict=True):
        node.start(new_session=True, command=command, wait=command == "serve")
    pki = make_pki("fleet")
    fleet = Fleet(nodes, store_url, pki, "", free_port(), [], [])
    fleet.ok(0, "UploadCertificate", **pki.root.upload_params("root", "Ca"))
    for i in range(4):
        leaf = pki.leaf(NAME, days=60 + i)
        fleet.fingerprints.append(leaf.fingerprint)
        fleet.certificates.append(
            str(fleet.ok(0, "UploadCertificate", **leaf.upload_params(f"c{i}"))["CertificateId"])
        )
    lb = fleet.ok(0, "CreateLoadBalancer", LoadBalancerName="fleet")["LoadBalancerId"]
    sg = fleet.ok(
        0, "CreateServerGroup", ServerGroupName="echo",
        Servers=[{"ServerIp": "127.0.0.1", "Port": echo_port, "Weight": 100}],
    )["ServerGroupId"]
    fleet.listener_id = str(fleet.ok(
        0, "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=fleet.port,
        CertificateIds=[fleet.certificates[0]],
    )["ListenerId"])
    return fleet


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """The listener's backend."""
    with EchoServer() as server:
        yield server


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str, echo: EchoServer) -> Iterator[Fleet]:
    """Three nodes on one store, all serving one listener."""
    made = _start_fleet(tmp_path, pg_url, echo.port)
    try:
        yield made
    finally:
        _stop(made.nodes)


def _stop(nodes: list[ServeProcess]) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGCONT)
            node.stop(signal.SIGKILL)


def _fingerprint(fleet: Fleet, certificate_id: str) -> str:
    got = fleet.ok(0, "GetCertificate", CertificateId=certificate_id)
    return str(got["Certificate"]["Fingerprint"])  # type: ignore[index]


def test_simultaneous_swaps_from_two_nodes_leave_exactly_one_default(fleet: Fleet) -> None:
    """30 pairs of swaps sent at the same moment through two nodes: each call is 200 or a
    clean 409, the listener always has exactly one default, the history numbers are unique,
    and the shared port serves the default the store names."""
    statuses: list[int] = []
    for round_ in range(30):
        barrier = threading.Barrier(2)
        picks = [fleet.certificates[(round_ + 1) % 4], fleet.certificates[(round_ + 2) % 4]]

        def swap(
            index: int, picks: list[str] = picks, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            response = fleet.call(
                index, "UpdateListenerAttribute", ListenerId=fleet.listener_id,
                CertificateIds=[picks[index]],
            )
            statuses.append(response.status_code)

        threads = [threading.Thread(target=swap, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(fleet.defaults()) == 1
    assert set(statuses) <= {200, 409} and statuses.count(200) >= 30
    [default] = fleet.defaults()
    history = fleet.ok(0, "ListRotationEvents", ListenerId=fleet.listener_id)["RotationEvents"]
    assert len({e["RotationEventId"] for e in history}) == len(history)  # type: ignore[union-attr]
    expected = _fingerprint(fleet, default)
    assert eventually(lambda: fleet.served() == {expected}, timeout=5)


def test_lost_notification_connections_heal(fleet: Fleet) -> None:
    """After the store ends every LISTEN connection, a swap still reaches every node within
    2 s (polling), and the nodes listen again by themselves."""
    admin = create_engine(fleet.store_url)
    with admin.begin() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )).scalar()
    admin.dispose()
    assert killed and killed >= 3
    fleet.ok(0, "UpdateListenerAttribute", ListenerId=fleet.listener_id,
             CertificateIds=[fleet.certificates[1]])
    revision = fleet.gauge(0, "certwatch_node_snapshot_revision")
    assert eventually(
        lambda: all(fleet.gauge(i, "certwatch_node_snapshot_revision") == revision
                    for i in range(3)),
        timeout=2.5,
    )
    assert fleet.served() == {_fingerprint(fleet, fleet.certificates[1])}


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_a_killed_or_frozen_leader_is_replaced_within_ten_seconds(
    fleet: Fleet, fault: str
) -> None:
    """kill -9 or SIGSTOP of the leader: another node leads within 10 s, exactly one leads,
    and a frozen leader that wakes up no longer leads."""
    assert eventually(lambda: len(fleet.leaders([0, 1, 2])) == 1, timeout=10)
    [leader] = fleet.leaders([0, 1, 2])
    process = fleet.nodes[leader].process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    others = [i for i in range(3) if i != leader]
    started = time.monotonic()
    assert eventually(lambda: len(fleet.leaders(others)) == 1, timeout=10)
    assert time.monotonic() - started < 10
    if fault == "freeze":
        os.killpg(process.pid, signal.SIGCONT)
        assert eventually(lambda: fleet.gauge(leader, "certwatch_node_leader") == 0.0, timeout=5)
        assert len(fleet.leaders([0, 1, 2])) == 1


def test_scans_on_every_node_at_once_never_fail(fleet: Fleet) -> None:
    """20 ScanNow calls spread over three nodes at the same moment all answer 200."""
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def scan(index: int) -> None:
        barrier.wait()
        statuses.append(fleet.call(index % 3, "ScanNow").status_code)

    threads = [threading.Thread(target=scan, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == [200] * 20


def test_rotations_through_every_node_are_applied(fleet: Fleet) -> None:
    """20 stage-and-rotate cycles, each through the next node: all 20 Applied (the live check
    waits until every node serves the new certificate), and the port serves the last one."""
    results = []
    last = None
    for cycle in range(20):
        node = cycle % 3
        last = fleet.pki.leaf(NAME, days=100 + cycle)
        staged = fleet.ok(node, "StageCertificate", Certificate=last.chain_pem,
                          PrivateKey=last.key_pem, ListenerId=fleet.listener_id)
        assert staged["Status"] == "Pending", staged
        rotated = fleet.ok(node, "RotateListenerCertificate", ListenerId=fleet.listener_id,
                           StagedCertificateId=staged["StagedCertificateId"])
        results.append((rotated["Result"], rotated["Reason"]))
    assert [r for r, _ in results] == ["Applied"] * 20, results
    assert last is not None and fleet.served() == {last.fingerprint}


def test_a_cut_off_node_answers_503_serves_tls_and_recovers(
    tmp_path: Path, pg_url: str, echo: EchoServer
) -> None:
    """A node whose store connection is cut answers writes with 503 StoreUnavailable and
    keeps serving TLS; once the store is back, its writes work again by themselves; a cut-off
    leader is replaced within 10 s."""
    target = make_url(pg_url)
    with Relay((target.host or "127.0.0.1", target.port or 5432)) as relay:
        made = _start_fleet(tmp_path, pg_url, echo.port, relays={2: relay})
        try:
            assert eventually(lambda: len(made.leaders([0, 1, 2])) == 1, timeout=10)
            relay.cut()
            response = made.call(2, "CreateLoadBalancer", LoadBalancerName="during")
            assert response.status_code == 503, response.text
            assert response.json()["Code"] == "StoreUnavailable"
            for _ in range(6):
                with tls_connect(made.port, client_context(made.pki.root_pem), NAME) as sock:
                    assert leaf_fingerprint(sock) == _fingerprint(made, made.certificates[0])
            assert eventually(lambda: len(made.leaders([0, 1])) == 1, timeout=10)
            relay.restore()
            assert eventually(
                lambda: made.call(2, "CreateLoadBalancer", LoadBalancerName="after")
                .status_code == 200,
                timeout=20,
            )
        finally:
            _stop(made.nodes)
    assert "Traceback" not in made.nodes[2].output()


def _swap_when_the_store_answers(fleet: Fleet, certificate: int, limit: float = 30.0) -> None:
    """Swap the fleet's default through node 0, retrying while the store is coming back."""
    deadline = time.monotonic() + limit
    while True:
        response = fleet.call(
            0, "UpdateListenerAttribute", ListenerId=fleet.listener_id,
            CertificateIds=[fleet.certificates[certificate]],
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        assert response.json()["Code"] == "StoreUnavailable", response.text
        time.sleep(0.2)
    assert response.status_code == 200, response.text


def test_a_store_outage_and_restart_heal_every_node(tmp_path: Path, echo: EchoServer) -> None:
    """Two `serve` nodes and a `proxy` node on a PostgreSQL of the test's own: while the store
    is down every node keeps serving TLS; after it is back, and after a `pg_ctl restart`,
    a swap reaches every node within 2 s of the API's answer, the proxy node included."""
    postgres = Postgres()
    try:
        postgres.start()
        made = _start_fleet(
            tmp_path, postgres.url, echo.port, commands=("serve", "serve", "proxy")
        )
        try:
            assert eventually(lambda: made.served(30) == {made.fingerprints[0]}, timeout=10)
            postgres.stop()
            assert made.served(30) == {made.fingerprints[0]}
            postgres.start()
            _swap_when_the_store_answers(made, 1)
            assert eventually(lambda: made.served(30) == {made.fingerprints[1]}, timeout=2.5)
            postgres.restart()
            _swap_when_the_store_answers(made, 2)
            assert eventually(lambda: made.served(30) == {made.fingerprints[2]}, timeout=2.5)
        finally:
            _stop(made.nodes)
        for node in made.nodes:
            assert "Traceback" not in node.output(), node.output()
    finally:
        postgres.remove()


class _HeldHook:
    """A webhook receiver that holds its first request until released (a slow receiver),
    recording the AlertId of every message it was sent."""

    def __init__(self) -> None:
        self.alert_ids: list[str] = []
        self.first = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                found = re.search(r"AlertId: (\S+)", json.loads(body).get("message", ""))
                hook.alert_ids.append(found.group(1) if found else "")
                if not hook.first.is_set():
                    hook.first.set()
                    hook.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Let a held request go and stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_leader_killed_during_a_slow_delivery_repeats_only_that_alert(
    tmp_path: Path, pg_url: str, echo: EchoServer
) -> None:
    """Two certificates in use expire within 30 days; the leader is killed while the webhook
    holds its first alert: the next leader delivers that alert again at most once (same
    AlertId) and the other alert exactly once."""
    hook = _HeldHook()
    try:
        made = _start_fleet(
            tmp_path, pg_url, echo.port,
            toml=f'[alerts]\nurls = ["json://127.0.0.1:{hook.port}/hook"]\n',
        )
        try:
            expiring = [
                str(made.ok(0, "UploadCertificate", **made.pki.leaf(
                    f"x{i}.{NAME}", days=5 + i).upload_params(f"x{i}"))["CertificateId"])
                for i in range(2)
            ]
            made.ok(0, "AssociateAdditionalCertificatesWithListener",
                    ListenerId=made.listener_id, AdditionalCertificateIds=expiring)
            assert eventually(lambda: len(made.leaders([0, 1, 2])) == 1, timeout=10)
            [leader] = made.leaders([0, 1, 2])

            def scan() -> None:
                with contextlib.suppress(httpx.HTTPError):  # the leader dies mid-call
                    made.call(leader, "ScanNow")

            threading.Thread(target=scan, daemon=True).start()
            assert hook.first.wait(30)
            process = made.nodes[leader].process
            assert process is not None
            os.killpg(process.pid, signal.SIGKILL)
            hook.release.set()
            others = [i for i in range(3) if i != leader]
            assert eventually(lambda: len(made.leaders(others)) == 1, timeout=10)
            assert eventually(lambda: len(set(hook.alert_ids)) == 2, timeout=30), hook.alert_ids
            time.sleep(2)  # a duplicate, if one were coming, would come now
        finally:
            _stop(made.nodes)
    finally:
        hook.close()
    first = hook.alert_ids[0]
    counts = Counter(hook.alert_ids)
    assert first and counts[first] <= 2, hook.alert_ids
    assert [n for alert, n in counts.items() if alert != first] == [1], hook.alert_ids
