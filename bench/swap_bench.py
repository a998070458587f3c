"""Swap benchmark: one listener's certificate swap through the HTTP API, at inventory size.

Run from the repository root:  .venv/bin/python -m bench.swap_bench  (options: --help)

1. fills a fresh store directly (fast: rows, not API calls) with --listeners running TCPSSL
   listeners and --certs real EC P-256 certificates with their sealed keys; each listener
   serves one default and (certs - spares) / listeners - 1 additional certificates, and
   --spares certificates are left free for the swaps;
2. starts a real `certwatch serve` on that store (2 proxy workers, SQLite) and waits until
   it serves every listener;
3. makes --swaps default-certificate swaps (`UpdateListenerAttribute` `CertificateIds`) one
   after the other, each on a different listener, alternating its certificate and a spare,
   and times each call from request to answer (the answer comes once both workers serve it);
4. checks with a real TLS client that the last swapped listener serves its new certificate;
5. reports p50/p99 per swap, the workers' RSS, and what their TLS contexts need: the RSS of
   a bare process that builds the same contexts (`offload.tls`) from the same certificates
   and holds nothing else (both figures include what an empty Python process takes).

Goals (issue 10): p50 < 100 ms, p99 < 250 ms; worker RSS growth ≤ 2× the bare contexts'.
Everything is on 127.0.0.1 with ephemeral ports; bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, create_engine, insert, text

from bench.certs import LeafFactory
from bench.serve import ServeProcess, free_ports, rss_kib, worker_pids
from certwatch.app.service import Service
from certwatch.config import Config
from certwatch.inventory.certificates import store_certificate
from certwatch.inventory.change import Change
from certwatch.store.db import transaction
from certwatch.store.models import Listener, ListenerCertificate, LoadBalancer, ServerGroup

ADDITIONAL_PER_LB = 25  # certwatch's quota of additional certificates per load balancer


def _config(data_dir: Path | str, store_url: str | None) -> Config:
    store = {"store": {"url": store_url}} if store_url else {}
    return Config.model_validate({"data_dir": str(data_dir), **store})


def fill(
    data_dir: Path, listeners: int, certs: int, spares: int, store_url: str | None = None
) -> list[dict[str, Any]]:
    """Write the inventory into a new store; one entry per listener: id, port, default
    certificate, spare certificate and the default's DNS name."""
    service = Service(_config(data_dir, store_url))
    factory = LeafFactory("bench swap")
    per = (certs - spares) // listeners
    per_lb = max(1, ADDITIONAL_PER_LB // max(1, per - 1))
    ports = free_ports(listeners)
    now = dt.datetime.now(dt.UTC)
    plan: list[dict[str, Any]] = []
    with transaction(service.engine) as session:
        change = Change(session, now, "bench", False, False, False)

        def upload(n: int) -> str:
            pem, key = factory.leaf(f"c{n}.swap.test")
            row = store_certificate(change, service.keybox, [], f"c{n}", "Server", pem, key)
            return row.id

        ids = [upload(n) for n in range(certs)]
        session.add(ServerGroup(id="sgp-bench", name="bench", created_at=now, servers=[
            {"ServerIp": "127.0.0.1", "Port": 9, "Weight": 1}
        ]))
        rows: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for i in range(listeners):
            lb = f"nlb-{i // per_lb:06d}"
            if i % per_lb == 0:
                session.add(LoadBalancer(id=lb, name=lb, created_at=now))
            lid = f"lsn-{i:06d}"
            rows.append(dict(
                id=lid, load_balancer_id=lb, protocol="TCPSSL", address="127.0.0.1",
                port=ports[i], server_group_id="sgp-bench",
                security_policy_id="tls_cipher_policy_1_2", status="Running", created_at=now,
            ))
            mine = ids[i * per : (i + 1) * per]
            links += [
                dict(listener_id=lid, certificate_id=cid, created_at=now,
                     role="default" if j == 0 else "additional")
                for j, cid in enumerate(mine)
            ]
            spare = listeners * per + i % spares
            plan.append(dict(
                id=lid, port=ports[i], default=mine[0], name=f"c{i * per}.swap.test",
                spare=ids[spare], spare_name=f"c{spare}.swap.test",
            ))
        session.flush()
        session.execute(insert(Listener), rows)
        session.execute(insert(ListenerCertificate), links)
    service.close()
    return plan


def served_name(port: int, name: str) -> str:
    """The common name of the certificate the listener on `port` serves for SNI `name`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = cx509.load_der_x509_certificate(der or b"")
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def bare_contexts_kib(data_dir: Path, store_url: str | None) -> int:
    """RSS (KiB) of a bare process holding the store's TLS contexts and nothing else."""
    code = "import sys;from bench.swap_bench import _bare;print(_bare(*sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), *([store_url] if store_url else [])],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.split()[-1])


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def _bare(data_dir: str, store_url: str | None = None) -> int:
    """In a bare process: build the store's snapshot, then every TLS context of it; the
    RSS (KiB) the process holds then."""
    import gc

    from certwatch.changes.snapshot import SnapshotBuilder
    from offload.tls import build_context

    service = Service(_config(data_dir, store_url))
    with transaction(service.engine) as session:
        specs = SnapshotBuilder(service.keybox, service.config.proxy).build(session, 0).listeners
    service.close()
    del service
    gc.collect()
    contexts = [build_context(spec) for spec in specs]
    assert len(contexts) == len(specs)
    return rss_kib(os.getpid()) or 0


def swap(client: httpx.Client, listener: str, certificate: str) -> float:
    """One default-certificate swap through the API; its seconds from request to answer."""
    start = time.perf_counter()
    answer = client.post("/v1/UpdateListenerAttribute", json={
        "ListenerId": listener,
        "CertificateIds": [certificate],
    })
    took = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(f"swap on {listener} answered {answer.status_code}: {answer.text}")
    return took


def _nodes(args: argparse.Namespace, tmp: Path, taken: set[int]) -> list[ServeProcess]:
    """One node on the filled SQLite store, or `--nodes` nodes sharing `--store-url`; no
    node's API port is one of the listeners' (`taken`: free now, bound once a node serves)."""

    def node(home: Path, toml: str = "") -> ServeProcess:
        while (made := ServeProcess(home, toml=toml, workers=2)).port in taken:
            pass
        return made

    if not args.store_url:
        return [node(tmp)]
    key_file = tmp / "data" / "secrets.key"
    toml = (
        "reload_interval = 2\n"
        f'[store]\nurl = "{args.store_url}"\n[secrets]\nkey_file = "{key_file}"\n'
    )
    homes = [tmp / f"node{i}" for i in range(args.nodes)]
    for home in homes:
        home.mkdir()
    return [node(home, toml) for home in homes]


def _served_everywhere(engine: Engine, nodes: int, limit: float) -> float:
    """Seconds until every node says (node_states) it serves the store's revision."""
    started = time.perf_counter()
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT revision FROM state_revision")).scalar_one()
        while time.perf_counter() - started < limit:
            serving = connection.execute(
                text("SELECT count(*) FROM node_states WHERE serves AND revision >= :r"),
                {"r": revision},
            ).scalar_one()
            connection.commit()
            if serving >= nodes:
                return time.perf_counter() - started
            time.sleep(0.002)
    raise RuntimeError(f"not every node served revision {revision} within {limit:g} s")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Fill, serve, swap, check; the figures."""
    deadline = time.monotonic() + args.max_seconds
    started = time.perf_counter()
    plan = fill(tmp / "data", args.listeners, args.certs, args.spares, args.store_url)
    figures: dict[str, Any] = {
        "listeners": args.listeners, "certificates": args.certs,
        "store": "postgresql" if args.store_url else "sqlite",
        "nodes": args.nodes if args.store_url else 1,
        "fill_seconds": round(time.perf_counter() - started, 1),
    }
    nodes = _nodes(args, tmp, {entry["port"] for entry in plan})
    engine = create_engine(args.store_url) if args.store_url else None
    try:
        started = time.perf_counter()
        for node in nodes:
            node.start(limit=max(60.0, deadline - time.monotonic()))
        figures["start_seconds"] = round(time.perf_counter() - started, 1)
        pids = [pid for node in nodes for pid in worker_pids(node.pid)]
        figures["worker_rss_mib_before"] = [round((rss_kib(p) or 0) / 1024) for p in pids]
        times: list[float] = []
        spread: list[float] = []
        with httpx.Client(base_url=nodes[0].url, timeout=30) as client:
            for k in range(args.swaps):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"--max-seconds passed after {k} swaps")
                entry = plan[(k * 7919) % len(plan)]
                target = entry["spare"] if entry.get("on") != "spare" else entry["default"]
                times.append(swap(client, entry["id"], target))
                entry["on"] = "spare" if target == entry["spare"] else "default"
                if engine is not None:
                    spread.append(_served_everywhere(engine, len(nodes), 30.0))
        last = plan[((args.swaps - 1) * 7919) % len(plan)]
        served = served_name(last["port"], last["name"])
        expected = last["name"] if last["on"] == "default" else last["spare_name"]
        figures["served_after_last_swap"] = served
        figures["served_as_expected"] = served == expected
        figures["p50_ms"] = round(percentile(times, 50) * 1000, 1)
        figures["p99_ms"] = round(percentile(times, 99) * 1000, 1)
        figures["max_ms"] = round(max(times) * 1000, 1)
        if spread:
            figures["every_node_serves_after_p50_ms"] = round(percentile(spread, 50) * 1000, 1)
            figures["every_node_serves_after_p99_ms"] = round(percentile(spread, 99) * 1000, 1)
            figures["every_node_serves_after_max_ms"] = round(max(spread) * 1000, 1)
        figures["worker_rss_mib_after"] = [round((rss_kib(p) or 0) / 1024) for p in pids]
    finally:
        for node in nodes:
            node.stop()
        if engine is not None:
            engine.dispose()
    figures["bare_contexts_rss_mib"] = round(bare_contexts_kib(tmp / "data", args.store_url) / 1024)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print its figures as JSON; exit 0 when the goals are met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--certs", type=int, default=10000)
    parser.add_argument("--spares", type=int, default=1000, help="certificates kept free")
    parser.add_argument("--swaps", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument(
        "--store-url", help="an EMPTY PostgreSQL database: the nodes share it (default: SQLite)"
    )
    parser.add_argument("--nodes", type=int, default=3, help="nodes with --store-url")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args, Path(tmp))
    worst = max(figures["worker_rss_mib_after"])
    figures["rss_ratio"] = round(worst / max(1, figures["bare_contexts_rss_mib"]), 2)
    figures["goals_met"] = (
        figures["served_as_expected"]
        and figures["p50_ms"] < 100
        and figures["p99_ms"] < 250
        and figures["rss_ratio"] <= 2.0
    )
    print(json.dumps(figures, indent=2))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
