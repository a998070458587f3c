"""Proxy benchmark: certwatch's offload proxy against HAProxy and nginx, same host, same load.

Run from the repository root:  .venv/bin/python -m bench.proxy_bench [--rounds 3] [--seconds 4]
Each scenario runs each side `rounds` times, alternating (certwatch, HAProxy, nginx,
certwatch, ...), every run on a freshly started proxy; the report gives median [min-max] per
side, the ratio of medians to each reference, the goals and whether they are met. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.certs import ChainFiles, make_chain
from bench.procfs import cpu_seconds, host_cpu_seconds, memory_kib
from bench.proxies import (
    BENCH_DIR,
    Running,
    Sink,
    build_tools,
    ensure_haproxy,
    ensure_nginx,
    start_haproxy,
    start_nginx,
    start_offload,
)
from bench.report import SIDES, Goal, render

T = TypeVar("T")


@dataclass
class Settings:
    """Everything a run needs: tools, certificates, backend ports, knobs."""

    loadgen: Path
    haproxy: Path
    nginx: Path
    sink: Sink
    chains: dict[str, ChainFiles]
    workdir: Path
    seconds: float
    concurrency: int
    loadgen_threads: int
    latency_count: int
    idle_conns: int
    workers: int
    candidate: str  # "offload", or "haproxy" to test the harness with HAProxy on both sides


@dataclass(frozen=True)
class Scenario:
    """One measured situation: which chain, backend and load-generator invocation."""

    key: str
    title: str
    chain: str  # "ecdsa" | "rsa"
    backend: str  # sink listener: "echo" | "discard" | "stream"
    run: Callable[[Settings, Running, Scenario], dict[str, float]]
    tls: str = "1.3"
    extra: tuple[str, ...] = field(default_factory=tuple)
    resume: bool = False  # clients offer the session of their previous connection


def loadgen(s: Settings, mode: str, port: int, *args: str, timeout: float) -> dict[str, float]:
    """Run the C load generator once and return its JSON result."""
    cmd = [str(s.loadgen), mode, "--port", str(port), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def tls_args(sc: Scenario) -> list[str]:
    """Load-generator TLS options: one version, one suite/cipher, one group (fixed for both)."""
    if sc.tls == "1.2":
        # HAProxy 2.6's default TLS 1.2 ECDHE curve is P-256 only, so offer exactly that.
        return ["--tls", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", "--groups", "P-256"]
    return ["--tls", "1.3", "--ciphersuites", "TLS_AES_128_GCM_SHA256", "--groups", "X25519"]


def loadgen_primed(cmd: list[str], timeout: float, mark: Callable[[], T]) -> tuple[T, dict]:
    """Run `loadgen conn --resume 1 --prime-wait 1`: once its priming pass (one full handshake
    per client) is done, call `mark` (the caller's clock and counters start there), let the
    measured run go, and return `mark`'s value and the result JSON."""
    gen = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert gen.stdin is not None and gen.stdout is not None
        line = gen.stdout.readline()  # bounded by the priming pass's own deadline
        if not line:
            gen.wait(10)
            err = gen.stderr.read().strip() if gen.stderr else ""
            raise RuntimeError(f"{' '.join(cmd)} ended before priming ({gen.returncode}): {err}")
        marked = mark()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, err = gen.communicate(timeout=timeout)  # closes stdin
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    if gen.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({gen.returncode}): {err.strip()}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return marked, result


def run_conn(s: Settings, proxy: Running, sc: Scenario) -> dict[str, float]:
    """Handshakes at saturation (full ones, or resumed ones when `sc.resume`); proxy CPU per
    connection and handshakes per proxy CPU second from /proc of its tree."""
    common = [*tls_args(sc), "--concurrency", str(s.concurrency)]
    common += ["--threads", str(s.loadgen_threads), "--resume", "1" if sc.resume else "0"]
    warm = min(1.0, s.seconds / 4)
    loadgen(s, "conn", proxy.port, *common, "--seconds", str(warm), timeout=warm + 60)

    def counters() -> tuple[float, float, tuple[float, float, float], float]:
        return cpu_seconds(proxy.proc.pid), s.sink.cpu(), host_cpu_seconds(), time.monotonic()

    if sc.resume:
        cmd = [str(s.loadgen), "conn", "--port", str(proxy.port), *common, "--prime-wait", "1"]
        cmd += ["--seconds", str(s.seconds)]
        (cpu0, sink0, host0, t0), r = loadgen_primed(cmd, s.seconds + 60, counters)
    else:
        cpu0, sink0, host0, t0 = counters()
        r = loadgen(
            s, "conn", proxy.port, *common, "--seconds", str(s.seconds), timeout=s.seconds + 60
        )
    wall = time.monotonic() - t0
    cpu, sink = cpu_seconds(proxy.proc.pid) - cpu0, s.sink.cpu() - sink0
    proc, intr, idle = (b - a for a, b in zip(host0, host_cpu_seconds(), strict=True))
    if r["ok"] <= 0:
        raise RuntimeError(f"no connection succeeded ({r['failures']:.0f} failed)")
    ok = r["ok"]
    out = {
        "host_idle_pct": 100 * idle / max(proc + intr + idle, 1e-9),
        # process CPU outside proxy, load generator and backend: other jobs on the host
        "other_cores": max(0.0, proc - cpu - sink - r["cpu_s"]) / wall,
        "conns_per_s": r["conns_per_s"],
        "proxy_cpu_us_per_conn": cpu * 1e6 / ok,
        "handshakes_per_cpu_s": ok / max(cpu, 1e-9),
        "proxy_cpu_cores": cpu / r["elapsed_s"],
        "failures": r["failures"],
        "stalled": r["stalled"],
        "resumed": r["resumed"],  # full-handshake scenarios: must be 0
        "conn_p99_us": r["conn_p99_us"],
        "loadgen_cpu_us_per_conn": r["cpu_us_per_conn"],
    }
    if sc.resume:
        out["resumed_fraction"] = r["resumed"] / ok
        out["primed"] = r["primed"]
        out["prime_failures"] = r["prime_failures"]
    return out


def run_bulk(s: Settings, proxy: Running, sc: Scenario) -> dict[str, float]:
    """One connection, bulk transfer in one direction; proxy CPU per MB as a side note."""
    direction = sc.extra[0]
    args = [*tls_args(sc), "--direction", direction, "--seconds", str(s.seconds)]
    cafile = str(s.chains[sc.chain].root_path)  # also checks the full chain is served
    cpu0 = cpu_seconds(proxy.proc.pid)
    r = loadgen(s, "bulk", proxy.port, *args, "--cafile", cafile, timeout=s.seconds + 60)
    cpu = cpu_seconds(proxy.proc.pid) - cpu0
    mb = r["bytes"] / 1e6
    return {
        "mb_per_s": r["mb_per_s"],
        "proxy_cpu_us_per_mb": cpu * 1e6 / mb if mb else 0.0,
        "loadgen_cpu_s": r["cpu_s"],
    }


def run_latency(s: Settings, proxy: Running, sc: Scenario) -> dict[str, float]:
    """64-byte ping-pong on one established connection."""
    args = [*tls_args(sc), "--count", str(s.latency_count), "--seconds", str(s.seconds)]
    cafile = str(s.chains[sc.chain].root_path)
    r = loadgen(s, "latency", proxy.port, *args, "--cafile", cafile, timeout=s.seconds + 60)
    return {
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
        "count": r["count"],
        "loadgen_cpu_s": r["cpu_s"],
    }


def run_idle(s: Settings, proxy: Running, sc: Scenario) -> dict[str, float]:
    """Memory (PSS over the proxy's process tree) added by N idle TLS connections, per 1,000."""
    args = [*tls_args(sc), "--concurrency", "8"]
    loadgen(s, "conn", proxy.port, *args, "--seconds", "0.5", timeout=60)  # warm allocators
    time.sleep(0.5)
    before = memory_kib(proxy.proc.pid)
    cmd = [str(s.loadgen), "idle", "--port", str(proxy.port), *tls_args(sc)]
    cmd += ["--conns", str(s.idle_conns), "--concurrency", "32", "--seconds", "30"]
    cmd += ["--hold-seconds", "60"]
    gen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert gen.stdin is not None and gen.stdout is not None
        ready = json.loads(gen.stdout.readline())  # bounded by the generator's own timers
        time.sleep(1.0)  # let the proxy finish backend connects and settle
        after = memory_kib(proxy.proc.pid)
        gen.stdin.write("done\n")
        gen.stdin.close()
        final = json.loads(gen.stdout.readline())
        gen.wait(30)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    held = max(int(ready["held"]), 1)
    return {
        "mib_per_1000": (after["pss"] - before["pss"]) / 1024 * 1000 / held,
        "rss_mib_per_1000": (after["rss"] - before["rss"]) / 1024 * 1000 / held,
        "held": ready["held"],
        "held_at_end": final["held_at_end"],
        "baseline_pss_mib": before["pss"] / 1024,
        "loadgen_cpu_s": final["cpu_s"],
    }


SCENARIOS = (
    Scenario("hs13_ecdsa", "TLS 1.3 + ECDSA P-256 full handshakes", "ecdsa", "echo", run_conn),
    Scenario("hs13_rsa", "TLS 1.3 + RSA-2048 full handshakes", "rsa", "echo", run_conn),
    Scenario(
        "hs12_ecdsa", "TLS 1.2 + ECDSA P-256 full handshakes", "ecdsa", "echo", run_conn, tls="1.2"
    ),
    Scenario(
        "res13_ecdsa",
        "TLS 1.3 + ECDSA P-256 resumed handshakes (tickets)",
        "ecdsa",
        "echo",
        run_conn,
        resume=True,
    ),
    Scenario(
        "res12_ecdsa",
        "TLS 1.2 + ECDSA P-256 resumed handshakes (tickets)",
        "ecdsa",
        "echo",
        run_conn,
        tls="1.2",
        resume=True,
    ),
    Scenario(
        "bulk_up", "bulk client→server, one connection", "ecdsa", "discard", run_bulk, extra=("up",)
    ),
    Scenario(
        "bulk_down",
        "bulk server→client, one connection",
        "ecdsa",
        "stream",
        run_bulk,
        extra=("down",),
    ),
    Scenario("latency", "64 B round trip, established connection", "ecdsa", "echo", run_latency),
    Scenario("idle", "idle TLS connections held open", "ecdsa", "echo", run_idle),
)

GOALS = (
    Goal(
        "hs13_ecdsa",
        "handshakes_per_cpu_s",
        "TLS 1.3 ECDSA: full handshakes per proxy CPU second",
        "≥",
        haproxy=1.0,
        nginx=0.9,
    ),
    Goal(
        "res13_ecdsa",
        "handshakes_per_cpu_s",
        "TLS 1.3 ECDSA: resumed handshakes per proxy CPU second",
        "≥",
        haproxy=1.0,
        nginx=1.0,
    ),
    Goal(
        "res12_ecdsa",
        "handshakes_per_cpu_s",
        "TLS 1.2 ECDSA: resumed handshakes per proxy CPU second",
        "≥",
        haproxy=1.0,
        nginx=1.0,
    ),
    Goal("bulk_up", "mb_per_s", "bulk up (client→server) MB/s", "≥", haproxy=1.0, nginx=1.0),
    Goal("bulk_down", "mb_per_s", "bulk down (server→client) MB/s", "≥", haproxy=1.0, nginx=1.0),
    Goal("latency", "p99_us", "64 B round trip p99 (µs)", "≤", haproxy=1.1),
    Goal(
        "idle",
        "mib_per_1000",
        "memory per 1,000 idle TLS connections (MiB, PSS)",
        "≤",
        haproxy=1.1,
    ),
    Goal("hs13_ecdsa", "conns_per_s", "TLS 1.3 ECDSA: connections/s", "≥", haproxy=0.85),
    Goal("hs13_rsa", "conns_per_s", "TLS 1.3 RSA-2048: connections/s", "≥", haproxy=0.85),
    Goal("hs12_ecdsa", "conns_per_s", "TLS 1.2 ECDSA: connections/s", "≥", haproxy=0.85),
    Goal("res13_ecdsa", "conns_per_s", "TLS 1.3 ECDSA resumed: connections/s", None),
    Goal("res12_ecdsa", "conns_per_s", "TLS 1.2 ECDSA resumed: connections/s", None),
    Goal("latency", "p50_us", "64 B round trip p50 (µs)", None),
    Goal(
        "hs13_ecdsa", "proxy_cpu_us_per_conn", "TLS 1.3 ECDSA: proxy CPU per connection (µs)", None
    ),
    Goal(
        "res13_ecdsa",
        "proxy_cpu_us_per_conn",
        "TLS 1.3 ECDSA resumed: proxy CPU per connection (µs)",
        None,
    ),
    Goal(
        "res12_ecdsa",
        "proxy_cpu_us_per_conn",
        "TLS 1.2 ECDSA resumed: proxy CPU per connection (µs)",
        None,
    ),
    Goal(
        "hs13_rsa",
        "handshakes_per_cpu_s",
        "TLS 1.3 RSA-2048: full handshakes per proxy CPU second",
        None,
    ),
    Goal(
        "hs12_ecdsa",
        "handshakes_per_cpu_s",
        "TLS 1.2 ECDSA: full handshakes per proxy CPU second",
        None,
    ),
)


def start_side(s: Settings, side: str, sc: Scenario) -> Running:
    """Start a fresh proxy for one run of one scenario."""
    chain, backend = s.chains[sc.chain], s.sink.ports[sc.backend]
    if side == "certwatch" and s.candidate == "offload":
        return start_offload(chain, backend, s.workers, s.workdir)
    if side == "nginx":
        return start_nginx(s.nginx, chain, backend, s.workdir, workers=s.workers)
    return start_haproxy(s.haproxy, chain, backend, s.workdir, threads=s.workers)


def run_once(s: Settings, side: str, sc: Scenario) -> dict:
    """One run on a fresh proxy; a failed run is recorded as {"error": ...}, not fatal."""
    try:
        proxy = start_side(s, side, sc)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"error": f"start: {exc}"}
    try:
        return sc.run(s, proxy, sc)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    finally:
        proxy.stop()


def measure(s: Settings, rounds: int, only: set[str] | None) -> dict[str, dict[str, list[dict]]]:
    """Run every scenario `rounds` times per side, alternating sides; returns raw results."""
    results: dict[str, dict[str, list[dict]]] = {}
    for sc in SCENARIOS:
        if only and sc.key not in only:
            continue
        results[sc.key] = {side: [] for side in SIDES}
        for rnd in range(rounds):
            for side in SIDES:
                r = run_once(s, side, sc)
                results[sc.key][side].append(r)
                brief = ", ".join(
                    f"{k}={v:.1f}" if isinstance(v, float | int) else f"{k}={v}"
                    for k, v in r.items()
                )
                print(f"  {sc.key} round {rnd + 1} {side}: {brief}", file=sys.stderr, flush=True)
    return results


def environment(
    haproxy: Path, nginx: Path, args: argparse.Namespace, load_at_start: tuple[float, ...]
) -> dict[str, str]:
    """Facts printed above the table so a reader can judge the numbers."""

    def out(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return ""
        return done.stdout or done.stderr  # `nginx -v` answers on stderr

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in out(["cat", "/proc/cpuinfo"]).splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "host": f"{platform.node()}, {out(['nproc']).strip()} CPUs ({cpu}), shared",
        "OpenSSL": out(["openssl", "version"]).strip(),
        "HAProxy": out([str(haproxy), "-v"]).splitlines()[0] if out([str(haproxy), "-v"]) else "?",
        "nginx": out([str(nginx), "-v"]).strip() or "?",
        "load average (1, 5, 15 min)": (
            f"{' '.join(f'{x:.2f}' for x in load_at_start)} at the start, "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
        ),
        "Python": platform.python_version(),
        "commit": out(["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"]).strip(),
        "settings": (
            f"rounds={args.rounds} seconds={args.seconds} concurrency={args.concurrency} "
            f"loadgen threads={args.loadgen_threads} certwatch workers={args.workers} "
            f"HAProxy nbthread={args.workers} nginx worker_processes={args.workers} "
            f"idle conns={args.idle_conns}"
        ),
        "certwatch side": (
            "certwatch offload (bench.run_offload)"
            if args.candidate == "offload"
            else "HAProxy STAND-IN (harness self-test, not certwatch)"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Build tools, make certificates, run the scenarios, print and save the report."""
    p = argparse.ArgumentParser(prog="python -m bench.proxy_bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="runs per side per scenario (≥3)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each measured run")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s")
    p.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    p.add_argument("--loadgen-threads", type=int, default=2)
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="certwatch workers = HAProxy nbthread = nginx worker_processes",
    )
    p.add_argument("--idle-conns", type=int, default=1000)
    p.add_argument("--only", default="", help="comma-separated scenario keys")
    p.add_argument(
        "--candidate",
        choices=("offload", "haproxy"),
        default="offload",
        help="'haproxy' tests the harness with HAProxy on both sides",
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR / "out" / "proxy.md")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, min(args.seconds, 2.0)
    tools = build_tools()
    haproxy = ensure_haproxy()
    try:
        nginx = ensure_nginx()
    except RuntimeError as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        return 2
    only = {k for k in args.only.split(",") if k} or None
    load_at_start = os.getloadavg()
    total = args.seconds * 20 * len(SCENARIOS) * args.rounds + 3600
    with tempfile.TemporaryDirectory(prefix="certwatch-bench-") as tmp:
        workdir = Path(tmp)
        chains = {kind: make_chain(kind, workdir / "certs") for kind in ("ecdsa", "rsa")}
        sink = Sink(tools["sink"], max_seconds=total)
        try:
            settings = Settings(
                loadgen=tools["loadgen"],
                haproxy=haproxy,
                nginx=nginx,
                sink=sink,
                chains=chains,
                workdir=workdir,
                seconds=args.seconds,
                concurrency=args.concurrency,
                loadgen_threads=args.loadgen_threads,
                latency_count=2000 if args.quick else 20000,
                idle_conns=args.idle_conns,
                workers=args.workers,
                candidate=args.candidate,
            )
            results = measure(settings, args.rounds, only)
        finally:
            sink.stop()
    env = environment(haproxy, nginx, args, load_at_start)
    text = render(env, results, GOALS, [(s.key, s.title) for s in SCENARIOS])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"written: {args.out} and {args.out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
