"""`certwatch serve` and `certwatch proxy`: run a node in the foreground until SIGTERM.

Start-up runs `preflight.check` first: a configuration that cannot work is one line on
stderr and exit 2, before anything is written to `data_dir`. The API's socket is bound
right after the checks, before the proxy, the store and the first scan, so a port taken
in between is named too.

SIGTERM or SIGINT: stop taking API calls and new proxy connections, let open ones finish
for up to `proxy.drain_timeout`, exit 0. A signal during start-up ends it there, exit 0.
A second signal kills the proxy workers (they would go on draining) and exits at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager, suppress
from types import FrameType

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from certwatch.api.http import create_app, server_config
from certwatch.app import demo as demo_mode
from certwatch.app import logs, preflight
from certwatch.app.heartbeat import Heartbeat
from certwatch.app.scheduler import start_scheduler
from certwatch.app.service import Service
from certwatch.changes.follow import follow
from certwatch.config import Config, ConfigError, load_config
from certwatch.console import mount as mount_console
from certwatch.store.cluster import is_postgres
from offload.errors import OffloadError
from offload.export import OffloadCollector
from offload.workers import ProxyControl

log = logging.getLogger(__name__)
STARTUP_ERRORS = (ConfigError, OSError, SQLAlchemyError, OffloadError)
"""What start-up can meet after the checks (a race, a store gone meanwhile): one line, exit 2."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signals to `run`."""
        yield


def _kill_workers(proxy: ProxyControl | None) -> None:
    """SIGKILL every proxy worker: left alone, they would go on draining after the exit."""
    if proxy is None:
        return
    for pid in proxy.worker_pids():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def load_and_check(
    config_path: str | None, mode: preflight.Mode, demo_port: int | None = None
) -> Config:
    """The configuration, checked for `mode`; ConfigError (one line) when it cannot work."""
    config = load_config(config_path)
    preflight.check(config, mode, demo_port)
    return config


def run(
    mode: preflight.Mode,
    config_path: str | None,
    demo_port: int | None = None,
    log_format: str = "text",
    log_level: str = "info",
) -> int:
    """Run a full node (`serve`) or a data-plane-only node (`proxy`); return the exit code.

    `demo_port` adds the demo listener on that port.
    """
    logs.setup(log_format, log_level)
    stop = threading.Event()
    server: _Server | None = None
    proxy: ProxyControl | None = None

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
    try:
        config = load_and_check(config_path, mode, demo_port)
        api_socket = (
            preflight.free_port(config.api.host, config.api.port, "api.listen")
            if mode == "serve"
            else None
        )
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        return 2
    workers = config.proxy_workers if mode == "serve" else max(config.proxy_workers, 1)
    if workers:
        proxy = ProxyControl(workers, ack_timeout=config.proxy.ack_timeout)
    echo = None
    service: Service | None = None
    try:
        try:
            if proxy is not None and not stop.is_set():
                proxy.start()
            if not stop.is_set():
                service = Service(config, data_plane=proxy)
                if proxy is not None:
                    service.registry.register(OffloadCollector(proxy))
            if service is not None and demo_port is not None and not stop.is_set():
                echo = demo_mode.install(service, demo_port)
            if service is not None and not stop.is_set():
                service.sync_data_plane()
                # What start-up built lives as long as the process: keep it out of the
                # collector's full passes, which would walk it in the middle of changes.
                gc.collect()
                gc.freeze()
        except Exception as exc:
            if stop.is_set():
                log.info("stopped during start-up (%s)", type(exc).__name__)
                return 0
            if not isinstance(exc, STARTUP_ERRORS):
                raise
            log.error("start-up failed: %s", _one_line(exc))
            return 2
        if service is None or stop.is_set():
            log.info("stopped during start-up")
            return 0
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
            app = create_app(service)
            mount_console(app, service)
            server = _Server(server_config(app, config.api, config.api.host, config.api.port))
            if demo_port is not None:
                steps = demo_mode.next_steps(
                    f"http://{config.api.listen}", demo_port, config.data_dir
                )
                print(steps, file=sys.stderr)
            scheduler = start_scheduler(service)
            service.leadership.on_lead.append(scheduler.run_now)
            if config.acme.enabled:
                service.acme.start()
            if config.rotation.watch:
                service.watcher.start()
            if api_socket is not None and not stop.is_set():
                server.run(sockets=[api_socket])
            service.watcher.stop()
            if config.acme.enabled:
                service.acme.stop()
            scheduler.stop()
        heartbeat.stop()
    finally:
        if api_socket is not None:
            api_socket.close()
        if service is not None:
            service.close()
        if proxy is not None:
            _drain(proxy, config.proxy.drain_timeout)
        if echo is not None:
            echo.stop()
    log.info("stopped")
    return 0


def _drain(proxy: ProxyControl, timeout: float) -> None:
    """Stop the proxy, letting open connections finish; log how many, for how long."""
    try:
        open_now = sum(c.active for c in proxy.stats().listeners.values())
    except OffloadError:
        open_now = 0
    log.info(
        "draining %d open connection(s) for up to %.1f s (proxy.drain_timeout)",
        open_now,
        timeout,
        extra={"open_connections": open_now, "drain_timeout": timeout},
    )
    started = time.monotonic()
    proxy.stop(timeout)
    took = time.monotonic() - started
    log.info("proxy stopped after %.1f s", took, extra={"drain_seconds": round(took, 3)})


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its own message's first line, else its type."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
