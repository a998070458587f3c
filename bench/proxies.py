"""The proxies under test (certwatch's offload, HAProxy, nginx) and the C tools, as processes."""

from __future__ import annotations

import grp
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.certs import ChainFiles
from bench.procfs import cpu_seconds, start_time, tree

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
NGINX_BINARY = Path("/usr/sbin/nginx")
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def build_tools() -> dict[str, Path]:
    """Compile loadgen and sink into bench/build/ (gcc -O2 -Wall -Wextra); returns their paths."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    libs = {"loadgen": ["-lssl", "-lcrypto", "-lpthread"], "sink": []}
    out: dict[str, Path] = {}
    for name, extra in libs.items():
        src, exe = BENCH_DIR / f"{name}.c", BUILD_DIR / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src), *extra]
            subprocess.run(cmd, check=True, timeout=120)
        out[name] = exe
    return out


def ensure_haproxy() -> Path:
    """Path of the haproxy binary, installing the Debian package if it is missing."""
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        install = ["apt-get", "install", "-y", "haproxy"]
        if subprocess.run(install, check=False, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, timeout=600)
            subprocess.run(install, check=True, timeout=600)
        found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return Path(found)


def ensure_nginx() -> Path:
    """Path of the nginx binary; raises RuntimeError naming what is missing (binary or the
    dynamic stream module) and the Debian packages that provide it."""
    found = shutil.which("nginx") or (str(NGINX_BINARY) if NGINX_BINARY.exists() else None)
    if found is None:
        raise RuntimeError(
            "nginx is not installed (no `nginx` on PATH, no /usr/sbin/nginx): "
            "apt-get install nginx libnginx-mod-stream"
        )
    if not NGINX_STREAM_MODULE.exists():
        raise RuntimeError(
            f"nginx's stream module is missing ({NGINX_STREAM_MODULE}): "
            "apt-get install libnginx-mod-stream"
        )
    return Path(found)


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float) -> None:
    """Block until 127.0.0.1:port accepts TCP, or raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def stop_tree(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM `proc`, wait, then SIGKILL whatever is left of its tree (by pid)."""
    if proc.poll() is None:
        started = {pid: start_time(pid) for pid in tree(proc.pid)}
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        for pid, when in started.items():
            if when is not None and start_time(pid) == when:  # same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(5)


@dataclass
class Running:
    """A started proxy: its root process (the CPU/memory tree root) and listening port."""

    name: str
    proc: subprocess.Popen[str]
    port: int

    def stop(self) -> None:
        """Stop the proxy and everything it spawned."""
        stop_tree(self.proc)


def start_haproxy(
    binary: Path, chain: ChainFiles, backend_port: int, workdir: Path, threads: int
) -> Running:
    """HAProxy in the foreground: nbthread N, mode tcp, one TLS frontend, one server."""
    port = free_port()
    cfg = workdir / f"haproxy-{port}.cfg"
    cfg.write_text(
        f"""global
    nbthread {threads}
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 900s
    timeout server 900s
frontend bench
    bind 127.0.0.1:{port} ssl crt {chain.combined_path} ssl-min-ver TLSv1.2
    default_backend echo
backend echo
    server s1 127.0.0.1:{backend_port}
"""
    )
    with open(workdir / f"haproxy-{port}.log", "w") as log:
        proc = subprocess.Popen(
            [str(binary), "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_listening(port, proc, 15.0)
    except RuntimeError:
        stop_tree(proc)
        raise
    return Running("haproxy", proc, port)


def _nginx_user_line() -> str:
    """`user` directive that keeps the workers as the current user (nginx started as root
    would switch them to `nobody`); empty otherwise (nginx ignores it when not root)."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def start_nginx(
    binary: Path, chain: ChainFiles, backend_port: int, workdir: Path, workers: int
) -> Running:
    """nginx (stream module) in the foreground: N worker processes, one TLS server, one
    upstream; session tickets under one key file shared by every worker, and a shared
    session cache for TLS 1.2 session ids. Prefix, pid, lock and logs in a directory of
    its own under `workdir`."""
    port = free_port()
    prefix = workdir / f"nginx-{port}"
    prefix.mkdir()
    ticket_key = prefix / "ticket.key"
    ticket_key.write_bytes(os.urandom(80))  # AES-256 tickets: name 16, AES 32, HMAC 32
    ticket_key.chmod(0o600)
    cfg = prefix / "nginx.conf"
    cfg.write_text(
        f"""load_module {NGINX_STREAM_MODULE};
{_nginx_user_line()}
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
lock_file {prefix}/nginx.lock;
error_log {prefix}/error.log warn;
events {{
    worker_connections 8000;
}}
stream {{
    upstream backend {{
        server 127.0.0.1:{backend_port};
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {chain.chain_path};
        ssl_certificate_key {chain.key_path};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        ssl_session_ticket_key {ticket_key};
        ssl_session_cache shared:SSL:10m;
        proxy_connect_timeout 5s;
        proxy_timeout 900s;
        proxy_pass backend;
    }}
}}
"""
    )
    with open(prefix / "stderr.log", "w") as log:
        proc = subprocess.Popen(
            [str(binary), "-p", str(prefix), "-c", str(cfg), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_listening(port, proc, 15.0)
    except RuntimeError as exc:
        stop_tree(proc)
        raise RuntimeError(f"{exc} (see {prefix}/error.log, {prefix}/stderr.log)") from exc
    return Running("nginx", proc, port)


def start_offload(chain: ChainFiles, backend_port: int, workers: int, workdir: Path) -> Running:
    """`python -m bench.run_offload` (ProxyControl with N workers) in its own process."""
    port = free_port()
    log_path = workdir / f"offload-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.run_offload",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--chain",
                str(chain.chain_path),
                "--key",
                str(chain.key_path),
                "--backend-port",
                str(backend_port),
            ],
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + 60.0
        buf = b""
        while b"READY" not in buf:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench.run_offload did not become ready (see {log_path})")
            if select.select([fd], [], [], 0.1)[0]:
                buf += os.read(fd, 4096)
        wait_listening(port, proc, 15.0)
    except BaseException:
        stop_tree(proc)
        raise
    return Running("certwatch", proc, port)


class Sink:
    """The C backend (echo / discard / stream listeners) for the whole benchmark."""

    def __init__(self, binary: Path, max_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [str(binary), "--max-seconds", str(max_seconds)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ports: dict[str, int] = {}
        for _ in range(3):
            name, port = self.proc.stdout.readline().split()
            self.ports[name] = int(port)

    def cpu(self) -> float:
        """CPU seconds the backend used so far."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Stop the backend."""
        stop_tree(self.proc)
