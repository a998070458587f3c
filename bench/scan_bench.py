"""Scan benchmark: a store-only scan of 10,000 certificates in use over 1,000 listeners, and a
live scan probing 1,000 SNI names on a loopback proxy listener.

Run from the repository root:  .venv/bin/python -m bench.scan_bench
Goals: store scan < 2 s and < 300 MB peak; 1,000 probes < 10 s. Also times one /metrics
scrape of the store collector over the same 10,000 certificates.

Store part: rows are inserted directly (fast); listeners are Stopped, so no probes run. The
expiry dates are spread over 0-120 days, so the FIRST scan also creates and delivers (to the
log, no URL configured) about a quarter of the certificates' alerts; the second scan is the
steady state. Probe part: one listener whose 10 additional certificates carry 100 DNS names
each, served by the real offload proxy (2 workers), scanned through `Scanner.run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import resource
import socket
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy import insert

from certwatch.app.service import Service
from certwatch.config import Config
from certwatch.scan.run import ScanReport
from certwatch.store.db import transaction
from certwatch.store.models import (
    Certificate,
    ChainEntry,
    Listener,
    ListenerCertificate,
    LoadBalancer,
    ServerGroup,
)
from offload.echo import EchoServer
from offload.workers import ProxyControl
from tests.certfactory import make_pki


def _timed(label: str, run: Callable[[], ScanReport]) -> ScanReport:
    start = time.perf_counter()
    report = run()
    print(f"{label}: {time.perf_counter() - start:.2f} s  {report.counts()}")
    return report


def _peak(label: str, run: Callable[[], ScanReport]) -> None:
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label}: peak traced Python memory {peak / 2**20:.1f} MiB")


def _fill(service: Service, listeners: int, per_listener: int) -> None:
    now = dt.datetime.now(dt.UTC)
    pem = make_pki("store bench").leaf("host.bench.test").chain_pem
    certs: list[dict[str, Any]] = []
    chains: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for n in range(listeners * per_listener):
        cert_id = f"cert-{n:016x}"
        certs.append(
            dict(
                id=cert_id,
                name=f"c{n}",
                type="Server",
                chain_pem=pem,
                fingerprint=f"{n:064x}",
                common_name=f"host{n}.bench.test",
                sans=[f"host{n}.bench.test"],
                issuer="CN=bench",
                serial_number=f"{n:x}",
                not_before=now - dt.timedelta(days=30),
                not_after=now + dt.timedelta(days=n % 120, hours=12),
                key_algorithm="EC",
                key_size=256,
                signature_algorithm="ecdsa-with-SHA256",
                chain_length=2,
                warnings=[],
                created_at=now,
            )
        )
        chains.append(
            dict(
                certificate_id=cert_id,
                position=1,
                common_name="Bench CA",
                fingerprint="00",
                not_before=now - dt.timedelta(days=300),
                not_after=now + dt.timedelta(days=900),
            )
        )
    for i in range(listeners):
        listener_id = f"lsn-{i:016x}"
        rows.append(
            dict(
                id=listener_id,
                load_balancer_id="nlb-0000000000000000",
                protocol="TCPSSL",
                address="127.0.0.1",
                port=10000 + i,
                server_group_id="sgp-0000000000000000",
                security_policy_id="tls_cipher_policy_1_2",
                status="Stopped",
                created_at=now,
            )
        )
        for j in range(per_listener):
            links.append(
                dict(
                    listener_id=listener_id,
                    certificate_id=f"cert-{i * per_listener + j:016x}",
                    role="default" if j == 0 else "additional",
                    created_at=now,
                )
            )
    with transaction(service.engine) as session:
        session.add(LoadBalancer(id="nlb-0000000000000000", name="bench", created_at=now))
        session.add(ServerGroup(id="sgp-0000000000000000", name="bench", created_at=now))
        session.flush()
        for model, values in (
            (Certificate, certs),
            (ChainEntry, chains),
            (Listener, rows),
            (ListenerCertificate, links),
        ):
            session.execute(insert(model), values)


def store_scan(
    data_dir: Path, listeners: int, per_listener: int, store_url: str | None = None
) -> None:
    """Scan 10,000 certificates in use (store only), twice: first (alerts) and steady."""
    store = {"store": {"url": store_url}} if store_url else {}
    service = Service(Config.model_validate({"data_dir": str(data_dir), **store}))
    _fill(service, listeners, per_listener)
    _timed("store scan, first (creates and logs the due alerts)", lambda: service.scanner.run())
    _timed("store scan, steady state", lambda: service.scanner.run())
    _peak("store scan, steady state", lambda: service.scanner.run())
    start = time.perf_counter()
    size = len(generate_latest(service.registry))
    print(f"/metrics scrape (store collector): {time.perf_counter() - start:.2f} s, {size} bytes")
    service.close()


def probe_scan(data_dir: Path, certs: int, names: int) -> None:
    """Scan one live listener serving `certs` × `names` SNI names through the real proxy."""
    pki = make_pki("scan bench")
    with ProxyControl(2) as proxy, EchoServer() as echo:
        service = Service(Config(data_dir=str(data_dir)), data_plane=proxy)

        def upload(*dns: str) -> str:
            params = pki.leaf(*dns).upload_params(dns[0])
            return str(service.call("UploadCertificate", params)["CertificateId"])

        service.call("UploadCertificate", pki.root.upload_params("root", "Ca"))
        default = upload("default.bench.test")
        extra = [upload(*(f"n{j}.c{i}.bench.test" for j in range(names))) for i in range(certs)]
        lb = service.call("CreateLoadBalancer", {"LoadBalancerName": "bench"})["LoadBalancerId"]
        group = service.call(
            "CreateServerGroup",
            {
                "ServerGroupName": "echo",
                "Servers": [{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 1}],
            },
        )["ServerGroupId"]
        listener = service.call(
            "CreateListener",
            {
                "LoadBalancerId": lb,
                "ListenerPort": _free_port(),
                "ServerGroupId": group,
                "CertificateIds": [default],
            },
        )["ListenerId"]
        service.call(
            "AssociateAdditionalCertificatesWithListener",
            {"ListenerId": listener, "AdditionalCertificateIds": extra},
        )
        _timed(f"live scan, {certs * names + 2} probes", lambda: service.scanner.run())
        _peak("live scan", lambda: service.scanner.run())
        service.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    """Run both parts and print seconds and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--per-listener", type=int, default=10)
    parser.add_argument("--probe-certs", type=int, default=10)
    parser.add_argument("--probe-names", type=int, default=100)
    parser.add_argument(
        "--store-url", help="an EMPTY PostgreSQL database for the store part (default SQLite)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        store_scan(Path(tmp) / "store", args.listeners, args.per_listener, args.store_url)
        probe_scan(Path(tmp) / "probe", args.probe_certs, args.probe_names)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (ru_maxrss): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
