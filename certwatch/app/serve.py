"""`certwatch serve` and `certwatch proxy`: run a node in the foreground until SIGTERM.

SIGTERM or SIGINT: stop taking API calls and new proxy connections, let open ones finish
for up to `proxy.drain_timeout`, exit 0. A second signal kills the proxy workers (they would
go on draining) and exits at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Generator
from contextlib import contextmanager, suppress
from types import FrameType

import uvicorn

from certwatch.api.http import create_app, server_config
from certwatch.app import demo as demo_mode
from certwatch.app import logs
from certwatch.app.heartbeat import Heartbeat
from certwatch.app.scheduler import start_scheduler
from certwatch.app.service import Service
from certwatch.changes.follow import follow
from certwatch.config import Config, ConfigError, load_config
from certwatch.store.cluster import is_postgres
from offload.export import OffloadCollector
from offload.workers import ProxyControl

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signals to `run`."""
        yield


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_api_exposure(config: Config) -> str | None:
    """Why the API must not start (beyond loopback without a token), or None."""
    host, _ = _split_listen(config.api.listen)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.api.token:
        return (
            f"api.listen is {config.api.listen}, beyond loopback, and api.token is not set: "
            "set a token (CERTWATCH_API_TOKEN) or listen on 127.0.0.1"
        )
    return None


def _kill_workers(proxy: ProxyControl | None) -> None:
    """SIGKILL every proxy worker: left alone, they would go on draining after the exit."""
    if proxy is None:
        return
    for pid in proxy.worker_pids():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run(
    mode: str, config_path: str | None, demo_port: int | None = None, log_format: str = "text"
) -> int:
    """Run a full node (`serve`) or a data-plane-only node (`proxy`); return the exit code.

    `demo_port` adds the demo listener on that port.
    """
    logs.setup(log_format)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    problem = check_api_exposure(config) if mode == "serve" else None
    if problem:
        log.error("refusing to start: %s", problem)
        return 2
    stop = threading.Event()
    server: _Server | None = None
    workers = config.proxy_workers if mode == "serve" else max(config.proxy_workers, 1)
    proxy = ProxyControl(workers, ack_timeout=config.proxy.ack_timeout) if workers else None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: killing the proxy workers and exiting at once")
            _kill_workers(proxy)
            os._exit(128 + signum)
        log.info("signal %d: draining", signum)
        stop.set()
        if server is not None:
            server.should_exit = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if proxy is not None:
        proxy.start()
    echo = None
    try:
        service = Service(config, data_plane=proxy)
        if proxy is not None:
            service.registry.register(OffloadCollector(proxy))
        if demo_port is not None:
            echo = demo_mode.install(service, demo_port)
        service.sync_data_plane()
        heartbeat = Heartbeat(service.node, leads=mode == "serve").start()
        if mode == "proxy":
            log.info(
                "proxy node serving the store's listeners; following changes every %.1fs",
                config.proxy.reload_interval,
            )
            follow(service.node.changes, service.engine, config.proxy.reload_interval, stop)
        else:
            if proxy is not None and is_postgres(service.engine):
                threading.Thread(
                    target=follow,
                    args=(service.node.changes, service.engine, config.proxy.reload_interval, stop),
                    daemon=True,
                ).start()
            host, port = _split_listen(config.api.listen)
            server = _Server(server_config(create_app(service), config.api, host, port))
            if demo_port is not None:
                steps = demo_mode.next_steps(
                    f"http://{config.api.listen}", demo_port, config.data_dir
                )
                print(steps, file=sys.stderr)
            scheduler = start_scheduler(service)
            service.leadership.on_lead.append(scheduler.run_now)
            if not stop.is_set():
                server.run()
            scheduler.stop()
        heartbeat.stop()
        service.close()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if proxy is not None:
            proxy.stop(config.proxy.drain_timeout)
        if echo is not None:
            echo.stop()
    log.info("stopped")
    return 0
