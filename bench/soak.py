"""Soak benchmark: a real `certwatch serve` at inventory size, writes while TLS traffic flows.

Run from the repository root:  .venv/bin/python -m bench.soak  (options: --help; README.md
in bench/ explains each step). In short:

1. starts `certwatch serve` (own temp data_dir, SQLite, 2 proxy workers, API on a free
   127.0.0.1 port, no scheduled scan, no automatic rotation) and an echo backend process;
2. builds through the HTTP API --listeners listeners and --certs certificates (EC P-256,
   one generated CA): uploads, load balancers, one server group, listeners each with a
   default certificate and additional (SNI) ones; reports the build time;
3. holds --connections TLS connections open (handshake + one echoed round trip each), runs
   a bounded handshake loop (new connection + one round trip, counting failures) and makes
   --writes mixed API writes one after the other, timing each; kills one proxy worker with
   SIGKILL half way;
4. checks every held connection with one more round trip, and reports.

Everything is on 127.0.0.1 with ephemeral ports and bounded by --max-seconds; the serve
process (and its workers) and the echo process are stopped in every case.
Exit status: 0 when every check passed, 1 when one failed, 2 when the run could not
complete (setup error or the time bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.certs import LeafFactory
from bench.serve import (
    ServeProcess,
    free_ports,
    rss_kib,
    socket_inodes,
    tcp4_by_inode,
    worker_pids,
)
from bench.soak_tls import Attempt, Target, TlsClient

T = TypeVar("T")
# certwatch's quota: additional certificates over all the listeners of one load balancer
MAX_ADDITIONAL_PER_LB = 25
MAX_PER_CALL = 15  # certificates per Associate call
LB_HEADROOM = 5  # additional-certificate places left free per load balancer for the writes
WRITE_WEIGHTS = {"swap": 3, "associate": 2, "disassociate": 2, "upload": 2, "policy": 2, "ca": 1}
CLEANUP_RESERVE = 25.0  # seconds of --max-seconds kept for the final check and the shutdown


class SoakError(Exception):
    """The run cannot go on (a build call failed, the time bound passed, ...)."""


class TimeUp(SoakError):
    """--max-seconds passed."""


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """How the inventory is laid out: certificates per listener and listeners per LB."""

    listeners: int
    certs: int
    spare: int  # uploaded but not in use at the start (the writes take from them)
    ca_listeners: int  # the last ones: CA switches only, no held connection, no handshake loop
    additional: tuple[int, ...]  # per listener
    lb_of: tuple[int, ...]  # per listener
    lbs: int


def make_plan(listeners: int, certs: int) -> Plan:
    """Spread `certs` over `listeners`: one default each, a few spare, the rest additional,
    packed into load balancers that keep LB_HEADROOM of their 25 places free."""
    if listeners < 2:
        raise SoakError("--listeners must be at least 2 (one for CA switches, one for traffic)")
    if certs < listeners:
        raise SoakError(f"--certs ({certs}) must be at least --listeners ({listeners})")
    spare = min(200, (certs - listeners) // 10)
    extra = certs - listeners - spare
    cap = MAX_ADDITIONAL_PER_LB - LB_HEADROOM
    per = [extra // listeners + (1 if i < extra % listeners else 0) for i in range(listeners)]
    if per[0] > cap:
        raise SoakError(
            f"{per[0]} additional certificates per listener exceed {cap} per load balancer: "
            "use more --listeners or fewer --certs"
        )
    lb_of: list[int] = []
    lb, used = 0, 0
    for n in per:
        if used + n > cap:
            lb, used = lb + 1, 0
        lb_of.append(lb)
        used += n
    return Plan(
        listeners=listeners,
        certs=certs,
        spare=spare,
        ca_listeners=max(1, listeners // 50),
        additional=tuple(per),
        lb_of=tuple(lb_of),
        lbs=lb + 1,
    )


# ---------------------------------------------------------------- API


class Api:
    """POST /v1/<Action> with a JSON body; every call bounded by the run's deadline."""

    def __init__(self, url: str, deadline: float, threads: int, build_retries: int = 5) -> None:
        self.url = url
        self.build_retries = build_retries
        self.deadline = deadline
        self.client = httpx.Client(
            base_url=url,
            limits=httpx.Limits(max_connections=threads + 2, max_keepalive_connections=threads),
        )
        self.retries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """(HTTP status or 0 for a transport error, JSON answer, seconds)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeUp(f"--max-seconds reached before {action}")
        start = time.perf_counter()
        try:
            resp = self.client.post(f"/v1/{action}", json=body, timeout=min(120.0, remaining))
        except httpx.HTTPError as exc:
            return 0, {"Code": type(exc).__name__, "Message": str(exc)}, time.perf_counter() - start
        took = time.perf_counter() - start
        try:
            answer = resp.json()
        except ValueError:
            answer = {"Code": f"HTTP{resp.status_code}", "Message": resp.text[:200]}
        return resp.status_code, answer, took

    def retried(self, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A build call: retried up to `build_retries` times on a transport error or a 5xx
        (a failed call changes nothing; the same ClientToken makes a repeat of a call that
        did go through answer as the first one). Counts the retries in `self.retries`."""
        body = {**body, "ClientToken": uuid.uuid4().hex}
        for attempt in range(self.build_retries + 1):
            status, answer, _ = self.call(action, body)
            if (status == 0 or status >= 500) and attempt < self.build_retries:
                with self._lock:
                    self.retries[f"{action}: {status} {answer.get('Code')}"] += 1
                time.sleep(min(2.0, 0.2 * (attempt + 1)))
                continue
            break
        return status, answer

    def must(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer of a changing build call that has to succeed (SoakError otherwise)."""
        status, answer = self.retried(action, body)
        if status != 200:
            raise SoakError(
                f"{action} failed ({status}): {answer.get('Code')}: {answer.get('Message')}"
            )
        return answer

    def close(self) -> None:
        self.client.close()


def _pooled(threads: int, fn: Callable[[int], T], count: int, label: str = "") -> list[T]:
    """fn(0) … fn(count-1) on `threads` threads, results in order; the first error cancels
    what has not started and raises. With `label`, prints progress every tenth."""
    pool = ThreadPoolExecutor(threads)
    start = time.monotonic()
    try:
        futures = [pool.submit(fn, n) for n in range(count)]
        out = []
        for n, future in enumerate(futures, start=1):
            out.append(future.result())
            if label and count >= 100 and n % (count // 10) == 0 and n < count:
                print(f"    {label}: {n}/{count}, {time.monotonic() - start:.0f} s", flush=True)
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- inventory


@dataclass
class ListenerState:
    """What the bench believes a listener serves (updated after every successful write)."""

    id: str
    port: int
    lb: str
    default: str
    additional: list[str]
    policy: str = "tls_cipher_policy_1_2"
    ca_enabled: bool = False
    ca_only: bool = False


@dataclass
class Inventory:
    """The built inventory and the certificates not in use."""

    listeners: list[ListenerState]
    names: dict[str, str]  # certificate id → its DNS name
    pool: list[str]  # server certificates in use nowhere
    lb_additional: dict[str, int]
    ca_id: str
    server_group: str
    policies: list[str]

    @property
    def traffic(self) -> list[ListenerState]:
        """The listeners with held connections and in the handshake loop."""
        return [entry for entry in self.listeners if not entry.ca_only]

    @property
    def ca_only(self) -> list[ListenerState]:
        return [entry for entry in self.listeners if entry.ca_only]


def build(
    api: Api,
    plan: Plan,
    factory: LeafFactory,
    echo_port: int,
    threads: int,
    timings: dict[str, float],
) -> Inventory:
    """Create the whole inventory through the API; fills `timings` per step (seconds)."""

    def step(label: str, run: Callable[[], T]) -> T:
        start = time.monotonic()
        out = run()
        timings[label] = time.monotonic() - start
        print(f"  {label}: {timings[label]:.1f} s", flush=True)
        return out

    names = [f"c{n}.soak.test" for n in range(plan.certs)]

    def upload(n: int) -> str:
        pem, key = factory.leaf(names[n])
        answer = api.must(
            "UploadCertificate",
            {
                "CertificateName": f"soak-{n}",
                "CertificateType": "Server",
                "Certificate": pem,
                "PrivateKey": key,
            },
        )
        return str(answer["CertificateId"])

    ids = step(
        f"generate + upload {plan.certs} certificates",
        lambda: _pooled(threads, upload, plan.certs, "uploaded"),
    )
    ca_id = str(
        api.must(
            "UploadCertificate",
            {"CertificateName": "soak-ca", "CertificateType": "Ca", "Certificate": factory.ca_pem},
        )["CertificateId"]
    )
    lbs = step(
        f"create {plan.lbs} load balancers + 1 server group",
        lambda: _pooled(
            threads,
            lambda j: str(
                api.must("CreateLoadBalancer", {"LoadBalancerName": f"soak-{j}"})["LoadBalancerId"]
            ),
            plan.lbs,
        ),
    )
    group = str(
        api.must(
            "CreateServerGroup",
            {
                "ServerGroupName": "soak-echo",
                "Servers": [{"ServerIp": "127.0.0.1", "Port": echo_port, "Weight": 100}],
            },
        )["ServerGroupId"]
    )
    ports = free_ports(plan.listeners)
    offsets = [plan.listeners + sum(plan.additional[:i]) for i in range(plan.listeners)]

    def create(i: int) -> ListenerState:
        port = ports[i]
        for attempt in range(3):
            status, answer = api.retried(
                "CreateListener",
                {
                    "LoadBalancerId": lbs[plan.lb_of[i]],
                    "ListenerPort": port,
                    "ServerGroupId": group,
                    "CertificateIds": [ids[i]],
                },
            )
            if status == 200:
                extra = ids[offsets[i] : offsets[i] + plan.additional[i]]
                return ListenerState(
                    str(answer["ListenerId"]),
                    port,
                    lbs[plan.lb_of[i]],
                    ids[i],
                    list(extra),
                    ca_only=i >= plan.listeners - plan.ca_listeners,
                )
            if answer.get("Code") != "PortInUse" or attempt == 2:
                raise SoakError(
                    f"CreateListener failed ({status}): {answer.get('Code')}: "
                    f"{answer.get('Message')}"
                )
            port = free_ports(1)[0]
        raise AssertionError("unreachable")

    listeners = step(
        f"create {plan.listeners} listeners",
        lambda: _pooled(threads, create, plan.listeners, "created"),
    )
    calls = [
        (entry.id, entry.additional[k : k + MAX_PER_CALL])
        for entry in listeners
        for k in range(0, len(entry.additional), MAX_PER_CALL)
    ]

    def associate(n: int) -> None:
        listener_id, chunk = calls[n]
        api.must(
            "AssociateAdditionalCertificatesWithListener",
            {"ListenerId": listener_id, "AdditionalCertificateIds": chunk},
        )

    step(
        f"associate {sum(plan.additional)} additional certificates ({len(calls)} calls)",
        lambda: _pooled(threads, associate, len(calls), "associate calls"),
    )
    lb_additional: dict[str, int] = Counter()
    for entry in listeners:
        lb_additional[entry.lb] += len(entry.additional)
    status, answer, _ = api.call("ListSecurityPolicies", {})
    if status != 200:
        raise SoakError(f"ListSecurityPolicies failed ({status}): {answer}")
    policies = [str(p["SecurityPolicyId"]) for p in answer["SecurityPolicies"] if p.get("System")]
    return Inventory(
        listeners=listeners,
        names=dict(zip(ids, names, strict=True)),
        pool=ids[plan.certs - plan.spare :],
        lb_additional=dict(lb_additional),
        ca_id=ca_id,
        server_group=group,
        policies=policies,
    )


# ---------------------------------------------------------------- writes


@dataclass
class Write:
    """One timed API write."""

    kind: str
    seconds: float
    ok: bool
    at: float  # monotonic time it finished
    error: str = ""


class Writer:
    """Chooses, makes and records the mixed writes, keeping `Inventory` in step."""

    def __init__(self, api: Api, inv: Inventory, factory: LeafFactory, rng: random.Random) -> None:
        self.api = api
        self.inv = inv
        self.factory = factory
        self.rng = rng
        self.uploads = 0
        self.done: list[Write] = []

    def _feasible(self) -> list[str]:
        inv = self.inv
        kinds = ["upload", "policy"]
        if inv.pool:
            kinds.append("swap")
            if any(inv.lb_additional.get(e.lb, 0) < MAX_ADDITIONAL_PER_LB for e in inv.traffic):
                kinds.append("associate")
        if any(e.additional for e in inv.traffic):
            kinds.append("disassociate")
        if inv.ca_only:
            kinds.append("ca")
        return kinds

    def one(self) -> Write:
        """Make one write of a randomly chosen feasible kind."""
        kinds = self._feasible()
        kind = self.rng.choices(kinds, [WRITE_WEIGHTS[k] for k in kinds])[0]
        make: dict[str, Callable[[], Write]] = {
            "swap": self._swap,
            "associate": self._associate,
            "disassociate": self._disassociate,
            "upload": self._upload,
            "policy": self._policy,
            "ca": self._ca,
        }
        write = make[kind]()
        self.done.append(write)
        return write

    def _timed(self, kind: str, action: str, body: dict[str, Any]) -> tuple[Write, dict[str, Any]]:
        status, answer, took = self.api.call(action, body)
        error = "" if status == 200 else f"{status} {answer.get('Code')}: {answer.get('Message')}"
        return Write(kind, took, status == 200, time.monotonic(), error[:300]), answer

    def _take_pool(self, count: int) -> list[str]:
        picked = self.rng.sample(range(len(self.inv.pool)), count)
        out = [self.inv.pool[i] for i in picked]
        for i in sorted(picked, reverse=True):
            self.inv.pool.pop(i)
        return out

    def _swap(self) -> Write:
        entry = self.rng.choice(self.inv.traffic)
        (new,) = self._take_pool(1)
        write, _ = self._timed(
            "swap", "UpdateListenerAttribute", {"ListenerId": entry.id, "CertificateIds": [new]}
        )
        if write.ok:
            self.inv.pool.append(entry.default)
            entry.default = new
        else:
            self.inv.pool.append(new)
        return write

    def _associate(self) -> Write:
        inv = self.inv
        entry = self.rng.choice(
            [e for e in inv.traffic if inv.lb_additional.get(e.lb, 0) < MAX_ADDITIONAL_PER_LB]
        )
        room = MAX_ADDITIONAL_PER_LB - inv.lb_additional.get(entry.lb, 0)
        certs = self._take_pool(self.rng.randint(1, min(3, room, len(inv.pool))))
        write, _ = self._timed(
            "associate",
            "AssociateAdditionalCertificatesWithListener",
            {"ListenerId": entry.id, "AdditionalCertificateIds": certs},
        )
        if write.ok:
            entry.additional.extend(certs)
            inv.lb_additional[entry.lb] = inv.lb_additional.get(entry.lb, 0) + len(certs)
        else:
            inv.pool.extend(certs)
        return write

    def _disassociate(self) -> Write:
        inv = self.inv
        entry = self.rng.choice([e for e in inv.traffic if e.additional])
        certs = self.rng.sample(
            entry.additional, self.rng.randint(1, min(3, len(entry.additional)))
        )
        write, _ = self._timed(
            "disassociate",
            "DisassociateAdditionalCertificatesWithListener",
            {"ListenerId": entry.id, "AdditionalCertificateIds": certs},
        )
        if write.ok:
            entry.additional = [c for c in entry.additional if c not in certs]
            inv.lb_additional[entry.lb] -= len(certs)
            inv.pool.extend(certs)
        return write

    def _upload(self) -> Write:
        self.uploads += 1
        name = f"u{self.uploads}.soak.test"
        pem, key = self.factory.leaf(name)  # generated before the clock starts
        write, answer = self._timed(
            "upload",
            "UploadCertificate",
            {
                "CertificateName": f"soak-u{self.uploads}",
                "CertificateType": "Server",
                "Certificate": pem,
                "PrivateKey": key,
            },
        )
        if write.ok:
            self.inv.pool.append(str(answer["CertificateId"]))
            self.inv.names[str(answer["CertificateId"])] = name
        return write

    def _policy(self) -> Write:
        entry = self.rng.choice(self.inv.traffic)
        policy = self.rng.choice([p for p in self.inv.policies if p != entry.policy])
        write, _ = self._timed(
            "policy",
            "UpdateListenerAttribute",
            {"ListenerId": entry.id, "SecurityPolicyId": policy},
        )
        if write.ok:
            entry.policy = policy
        return write

    def _ca(self) -> Write:
        entry = self.rng.choice(self.inv.ca_only)
        if entry.ca_enabled:
            body: dict[str, Any] = {"ListenerId": entry.id, "CaEnabled": False}
        else:
            body = {"ListenerId": entry.id, "CaEnabled": True, "CaCertificateIds": [self.inv.ca_id]}
        write, _ = self._timed(
            "ca-off" if entry.ca_enabled else "ca-on", "UpdateListenerAttribute", body
        )
        if write.ok:
            entry.ca_enabled = not entry.ca_enabled
        return write


# ---------------------------------------------------------------- report helpers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def write_table(writes: list[Write]) -> list[dict[str, Any]]:
    """Per kind and overall: count, failures, p50/p99/max in ms."""
    groups: dict[str, list[Write]] = defaultdict(list)
    for w in writes:
        groups[w.kind].append(w)
    rows = []
    for kind, group in [*sorted(groups.items()), ("all", writes)]:
        times = [w.seconds * 1000 for w in group]
        rows.append(
            {
                "kind": kind,
                "count": len(group),
                "failed": sum(not w.ok for w in group),
                "p50_ms": round(percentile(times, 50), 1),
                "p99_ms": round(percentile(times, 99), 1),
                "max_ms": round(max(times, default=0.0), 1),
            }
        )
    return rows


def held_by_worker(client: TlsClient, pids: Iterable[int]) -> dict[int, int]:
    """held connection index → pid of the worker that holds its accepted socket (from the
    socket inodes in /proc/<pid>/fd and the ports in /proc/net/tcp)."""
    wanted = {(h.target.port, h.local_port): h.index for h in client.held}
    table = tcp4_by_inode()
    out: dict[int, int] = {}
    for pid in pids:
        for inode in socket_inodes(pid):
            ports = table.get(inode)
            if ports is not None and ports in wanted:
                out[wanted[ports]] = pid
    return out


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to `needed` (up to the hard limit); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def start_echo(max_seconds: float) -> tuple[subprocess.Popen[bytes], int]:
    """The echo backend process and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_proc", "--max-seconds", str(max_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise SoakError(f"echo backend did not start: {line!r}")
    return process, int(line)


def stop_echo(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        try:
            process.stdin.close()
        except OSError:
            pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything measured, for the report and the JSON file."""

    args: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    incomplete: str = ""


def soak(args: argparse.Namespace, run: Run, tmp: Path) -> None:
    """Steps 1-4 of the module docstring; fills `run`. Raises SoakError to stop early."""
    t0 = time.monotonic()
    hard_deadline = t0 + args.max_seconds
    soft_deadline = hard_deadline - CLEANUP_RESERVE
    res = run.result
    plan = make_plan(args.listeners, args.certs)
    res["plan"] = {
        "listeners": plan.listeners,
        "certificates": plan.certs,
        "additional_in_use": sum(plan.additional),
        "spare": plan.spare,
        "load_balancers": plan.lbs,
        "ca_switch_listeners": plan.ca_listeners,
    }
    soft, hard = raise_nofile(2 * args.connections + 2 * plan.listeners + 1024)
    res["nofile"] = [soft, hard]
    print(f"plan: {res['plan']}; RLIMIT_NOFILE {soft}/{hard}", flush=True)
    echo, echo_port = start_echo(args.max_seconds)
    serve = ServeProcess(
        tmp,
        toml='[scan]\ninterval = "30d"\n[rotation]\nauto = false\n',
        workers=2,
    )
    client: TlsClient | None = None
    api: Api | None = None
    watchdog = threading.Timer(args.max_seconds, _hard_stop, (serve, echo))
    watchdog.daemon = True
    watchdog.start()
    try:
        serve.start()
        api = Api(serve.url, soft_deadline, args.build_threads, args.build_retries)
        factory = LeafFactory()
        print(f"serve pid {serve.pid}, API {serve.url}, echo backend port {echo_port}", flush=True)

        # ---- build
        timings: dict[str, float] = {}
        start = time.monotonic()
        try:
            inv = build(api, plan, factory, echo_port, args.build_threads, timings)
        finally:
            res["build_seconds"] = round(time.monotonic() - start, 1)
            res["build_steps_seconds"] = {k: round(v, 1) for k, v in timings.items()}
            res["build_retries"] = sum(api.retries.values())
            res["build_retry_reasons"] = api.retries.most_common(5)
        print(f"build: {res['build_seconds']} s", flush=True)
        pids = worker_pids(serve.pid)
        res["rss_kib_after_build"] = {str(p): rss_kib(p) for p in pids}

        # ---- held connections
        rng = random.Random(args.seed)
        traffic = inv.traffic

        def target(entry: ListenerState, k: int) -> Target:
            if k % 2 and entry.additional:
                return Target(
                    entry.port, inv.names[entry.additional[k // 2 % len(entry.additional)]]
                )
            return Target(entry.port, inv.names[entry.default])

        held_targets = [
            target(traffic[i % len(traffic)], i // len(traffic)) for i in range(args.connections)
        ]
        client = TlsClient(factory.ca_pem)
        start = time.monotonic()
        open_errors = client.run(
            client.open_held(held_targets, 64, 15.0), soft_deadline - time.monotonic()
        )
        res["held_open_seconds"] = round(time.monotonic() - start, 1)
        res["held_opened"] = len(client.held)
        res["held_open_failed"] = len(open_errors)
        res["held_open_errors"] = Counter(e.split(": ", 1)[-1] for e in open_errors).most_common(5)
        print(
            f"held connections: {len(client.held)} open, {len(open_errors)} failed "
            f"({res['held_open_seconds']} s)",
            flush=True,
        )
        if open_errors:
            run.problems.append(
                f"{len(open_errors)} of {args.connections} held connections did not open"
            )
        pids = worker_pids(serve.pid)
        owner = held_by_worker(client, pids)
        res["rss_kib_before_writes"] = {str(p): rss_kib(p) for p in pids}
        res["held_per_worker"] = {str(p): sum(1 for v in owner.values() if v == p) for p in pids}
        res["held_unmapped"] = len(client.held) - len(owner)

        # ---- handshake loop + writes
        loop_targets = [target(e, k) for e in traffic for k in (0, 1)]
        rng.shuffle(loop_targets)
        stop_loop = threading.Event()
        loop_future = client.submit(
            client.handshake_loop(
                loop_targets,
                args.handshake_concurrency,
                args.handshake_limit,
                stop_loop,
                soft_deadline,
                10.0,
            )
        )
        writer = Writer(api, inv, factory, rng)
        kill_at = int(args.writes * args.kill_at) if args.kill_at >= 0 else -1
        killed: int | None = None
        t_kill = t_new = t_window_end = None
        seen_pids = set(pids)
        restarts_unprovoked: list[int] = []
        start = time.monotonic()
        for n in range(args.writes):
            if time.monotonic() >= soft_deadline:
                run.incomplete = f"--max-seconds reached after {n} of {args.writes} writes"
                break
            if n == kill_at:
                current = worker_pids(serve.pid)
                if current:
                    killed = current[0]
                    os.kill(killed, signal.SIGKILL)
                    t_kill = time.monotonic()
                    print(f"  write {n}: SIGKILL worker {killed}", flush=True)
            write = writer.one()
            now_pids = set(worker_pids(serve.pid))
            for pid in now_pids - seen_pids:
                if t_kill is not None and t_new is None:
                    t_new = time.monotonic()
                else:
                    restarts_unprovoked.append(pid)
            seen_pids |= now_pids
            if t_new is not None and t_window_end is None and write.ok and write.at >= t_new:
                t_window_end = write.at  # that write's snapshot reached every worker
            if (n + 1) % max(1, args.writes // 10) == 0:
                bad = sum(not w.ok for w in writer.done)
                print(
                    f"  {n + 1} writes, {bad} failed, {time.monotonic() - start:.1f} s",
                    flush=True,
                )
        writes_wall = time.monotonic() - start
        stop_loop.set()
        loop = loop_future.result(max(1.0, hard_deadline - time.monotonic() - 10))
        writes = writer.done
        res["writes"] = len(writes)
        res["writes_failed"] = sum(not w.ok for w in writes)
        res["writes_wall_seconds"] = round(writes_wall, 1)
        res["writes_per_second"] = round(len(writes) / writes_wall, 2) if writes_wall else 0.0
        res["write_table"] = write_table(writes)
        res["write_errors"] = Counter(w.error for w in writes if not w.ok).most_common(5)
        if res["writes_failed"]:
            run.problems.append(f"{res['writes_failed']} of {len(writes)} writes failed")

        # ---- handshake loop results
        window: tuple[float, float] | None = None
        if t_kill is not None:
            end = t_window_end or t_new or time.monotonic()
            window = (t_kill, end)
            res["kill"] = {
                "pid": killed,
                "replacement_seen_after_s": round(t_new - t_kill, 2) if t_new else None,
                "death_window_s": round(end - t_kill, 2),
                "held_on_killed_worker": sum(1 for v in owner.values() if v == killed),
            }
            if t_new is None:
                run.problems.append(f"no replacement for killed worker {killed} appeared")
        res["worker_restarts_unprovoked"] = restarts_unprovoked
        if restarts_unprovoked:
            run.problems.append(
                f"{len(restarts_unprovoked)} worker restart(s) beyond the one provoked by the kill"
            )

        def in_window(a: Attempt) -> bool:
            return window is not None and window[0] <= a.end <= window[1]

        failed = [a for a in loop.attempts if not a.ok]
        res["handshakes"] = len(loop.attempts)
        res["handshakes_failed"] = len(failed)
        res["handshakes_failed_in_death_window"] = sum(in_window(a) for a in failed)
        res["handshakes_in_death_window"] = sum(in_window(a) for a in loop.attempts)
        res["handshake_errors"] = Counter(a.error for a in failed).most_common(5)
        outside = len(failed) - res["handshakes_failed_in_death_window"]
        if outside:
            run.problems.append(
                f"{outside} new handshakes failed outside the worker's death window"
            )

        # ---- final check of the held connections
        dropped = client.run(
            client.check_held(max(1, len(client.held)), 10.0),
            max(5.0, hard_deadline - time.monotonic() - 10),
        )
        by_owner = Counter(owner.get(i) for i in dropped)
        res["held_dropped"] = len(dropped)
        res["held_dropped_by_worker"] = {str(k): v for k, v in by_owner.items()}
        res["held_dropped_on_killed_worker"] = by_owner.get(killed, 0) if killed else 0
        res["held_drop_errors"] = Counter(dropped.values()).most_common(3)
        others = len(dropped) - res["held_dropped_on_killed_worker"]
        if others:
            run.problems.append(
                f"{others} held connections dropped that were not on the killed worker"
            )
        pids = worker_pids(serve.pid)
        res["rss_kib_after"] = {str(p): rss_kib(p) for p in pids}
        print(
            f"final check: {len(dropped)} of {len(client.held)} held connections dropped "
            f"({res['held_dropped_on_killed_worker']} on the killed worker)",
            flush=True,
        )
        client.run(client.close_held(5.0), 10.0)
    finally:
        if client is not None:
            client.close()
        if api is not None:
            api.close()
        code = serve.stop(15.0)
        stop_echo(echo)
        watchdog.cancel()
        res["serve_exit_status"] = code
        if code is None:
            run.problems.append("serve did not exit within 15 s of SIGTERM (killed)")
        elif code != 0:
            run.problems.append(f"serve exited {code} after SIGTERM (expected 0)")
        res["serve_log_tail"] = serve.tail(15)
        try:  # the whole log, beside the JSON results
            log_copy = args.out.with_suffix(".serve.log")
            log_copy.parent.mkdir(parents=True, exist_ok=True)
            log_copy.write_bytes(serve.log.read_bytes())
            res["serve_log"] = str(log_copy)
        except OSError:
            pass
        res["total_seconds"] = round(time.monotonic() - t0, 1)


def _hard_stop(serve: ServeProcess, echo: subprocess.Popen[bytes]) -> None:
    """--max-seconds passed and the run did not stop by itself: end everything now."""
    print(
        "soak: --max-seconds passed; killing serve and the echo backend",
        file=sys.stderr,
        flush=True,
    )
    if serve.process is not None:
        try:
            os.killpg(serve.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    echo.kill()
    os._exit(2)


def report(run: Run) -> str:
    """The human-readable summary."""
    r = run.result
    lines = ["# certwatch soak", "", f"options: {run.args}", ""]
    if "plan" in r:
        lines.append(f"inventory: {r['plan']}")
    if "build_seconds" in r:
        lines.append(f"build: {r['build_seconds']} s  {r['build_steps_seconds']}")
        if r.get("build_retries"):
            lines.append(
                f"build calls retried: {r['build_retries']} times {r['build_retry_reasons']}"
            )
    if "held_opened" in r:
        lines.append(
            f"held connections: {r['held_opened']} open ({r['held_open_failed']} failed to open), "
            f"per worker {r['held_per_worker']}, unmapped {r['held_unmapped']}"
        )
    if "writes" in r:
        lines += [
            f"writes: {r['writes']} in {r['writes_wall_seconds']} s = "
            f"{r['writes_per_second']} writes/s, {r['writes_failed']} failed",
            "",
            "| kind | count | failed | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['kind']} | {row['count']} | {row['failed']} | {row['p50_ms']} | "
            f"{row['p99_ms']} | {row['max_ms']} |"
            for row in r["write_table"]
        ]
        lines.append("")
        if r["write_errors"]:
            lines.append(f"write errors (most common): {r['write_errors']}")
    if "kill" in r:
        lines.append(f"worker kill: {r['kill']}")
    if "handshakes" in r:
        lines.append(
            f"handshake loop: {r['handshakes']} new connections, {r['handshakes_failed']} failed, "
            f"{r['handshakes_failed_in_death_window']} of them in the death window "
            f"({r['handshakes_in_death_window']} attempts ended in it)"
        )
        if r["handshake_errors"]:
            lines.append(f"handshake errors (most common): {r['handshake_errors']}")
    if "held_dropped" in r:
        lines.append(
            f"held connections dropped: {r['held_dropped']} "
            f"({r['held_dropped_on_killed_worker']} on the killed worker, which held "
            f"{r.get('kill', {}).get('held_on_killed_worker', 0)}); by worker "
            f"{r['held_dropped_by_worker']}"
        )
        if r["held_drop_errors"]:
            lines.append(f"drop errors: {r['held_drop_errors']}")
    if r.get("worker_restarts_unprovoked"):
        pids = r["worker_restarts_unprovoked"]
        shown = ", ".join(map(str, pids[:10])) + (", …" if len(pids) > 10 else "")
        lines.append(f"worker restarts not provoked by the kill: {len(pids)} (new pids {shown})")
    for key in ("rss_kib_after_build", "rss_kib_before_writes", "rss_kib_after"):
        if key in r:
            lines.append(f"worker RSS (KiB) {key[8:].replace('_', ' ')}: {r[key]}")
    code = r.get("serve_exit_status")
    lines.append(
        "serve exit status after SIGTERM: "
        + ("none, killed after 15 s" if code is None else str(code))
    )
    lines.append(f"total: {r.get('total_seconds')} s")
    if run.incomplete:
        lines.append(f"INCOMPLETE: {run.incomplete}")
    if run.incomplete:
        verdict = "not all run (incomplete)" + (", and FAILED" if run.problems else "")
    else:
        verdict = "FAILED" if run.problems else "all passed"
    lines.append(f"checks: {verdict}")
    lines += [f"- {p}" for p in run.problems]
    if run.problems or run.incomplete:
        lines += ["", "serve log (tail):", r.get("serve_log_tail", "")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument(
        "--certs", type=int, default=10000, help="certificates uploaded by the build"
    )
    parser.add_argument("--connections", type=int, default=2000, help="long-lived TLS connections")
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="bound on the whole run")
    parser.add_argument(
        "--build-threads", type=int, default=8, help="concurrent API calls while building"
    )
    parser.add_argument(
        "--build-retries",
        type=int,
        default=5,
        help="retries of a build call on a 5xx/transport error",
    )
    parser.add_argument("--handshake-concurrency", type=int, default=2, help="handshake loop lanes")
    parser.add_argument(
        "--handshake-limit", type=int, default=200_000, help="most loop connections"
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="SIGKILL one proxy worker after this fraction of the writes (negative: never)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the write mix")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/out/soak.json"), help="JSON results"
    )
    args = parser.parse_args(argv)
    if args.connections < 0 or args.writes < 0 or args.max_seconds <= CLEANUP_RESERVE:
        parser.error(f"--connections/--writes must be >= 0 and --max-seconds > {CLEANUP_RESERVE:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the report, write the JSON; return the exit status."""
    args = parse_args(argv)
    run = Run(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    status = 0
    with tempfile.TemporaryDirectory(prefix="certwatch-soak-") as tmp:
        try:
            soak(args, run, Path(tmp))
        except (SoakError, RuntimeError) as exc:
            run.incomplete = str(exc)
        except TimeoutError as exc:  # concurrent.futures' timeouts are TimeoutError on 3.11
            run.incomplete = f"timed out: {exc or 'a client step passed its bound'}"
    text = report(run)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": run.args,
                "result": run.result,
                "problems": run.problems,
                "incomplete": run.incomplete,
            },
            indent=2,
            default=str,
        )
    )
    if run.incomplete:
        status = 2
    elif run.problems:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
