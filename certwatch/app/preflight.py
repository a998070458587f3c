"""Start-up checks: everything a configuration needs, checked before anything is written.

`check` raises ConfigError with one line that names the key (or file, or port) and why;
`certwatch serve`, `certwatch proxy` and `certwatch config check` run it first. It only
reads: folders that do not exist yet are checked to be creatable (their nearest existing
parent is a folder this user may write), not created. Foreign errors are mapped here, by
type or errno, onto that one line.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from pathlib import Path
from typing import Literal

import apprise
from cryptography import x509
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlmodel import create_engine

from certwatch.config import Config, ConfigError
from certwatch.private_files import refuse_shared

Mode = Literal["serve", "proxy"]
STORE_ATTEMPTS = 3
STORE_RETRY_SECONDS = 1.0
STORE_CONNECT_TIMEOUT = 3


def check(config: Config, mode: Mode, demo_port: int | None = None) -> None:
    """Every check a start in `mode` needs; ConfigError (one line) at the first that fails."""
    if mode == "serve":
        _api_exposure(config)
    _creatable(Path(config.data_dir), "data_dir")
    _key_file(config.key_file)
    _creatable(config.staging_dir, "rotation.staging_dir")
    _store(config.store_url, "store.url" if config.store.url else "data_dir")
    if config.scan.trusted_ca_file is not None:
        _ca_file(Path(config.scan.trusted_ca_file))
    if config.rotation.pkcs12_password_file is not None:
        _password_file(Path(config.rotation.pkcs12_password_file))
    for index, url in enumerate(config.alerts.urls):
        _alert_url(index, url)
    if mode == "serve":
        free_port(config.api.host, config.api.port, "api.listen").close()
    if demo_port is not None:
        if config.proxy_workers == 0:
            raise ConfigError("--demo needs a data plane, and proxy.workers is 0")
        free_port("127.0.0.1", demo_port, "the demo listener (--demo-port)").close()


def _api_exposure(config: Config) -> None:
    """Beyond loopback, the API needs a token."""
    host = config.api.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.api.token:
        raise ConfigError(
            f"api.listen is {config.api.listen}, beyond loopback, and api.token is not set: "
            "set a token (CERTWATCH_API_TOKEN) or listen on 127.0.0.1"
        )


def _creatable(path: Path, key: str) -> None:
    """`path` is a folder this user may write, or can be created as one."""
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        what = "is not a folder" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{key} {path}: {what}")
    where = "" if existing == path else f"cannot be created: {existing} "
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise ConfigError(f"{key} {path}: {where}is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {path}: {where}is not writable by this user")


def _key_file(path: Path) -> None:
    """An existing key file is readable and private; a new one's folder is creatable."""
    if not path.exists():
        _creatable(path.parent, "secrets.key_file's folder")
        return
    if not path.is_file():
        raise ConfigError(f"secrets.key_file {path}: is not a file")
    try:
        with path.open("rb") as handle:
            refuse_shared(handle.fileno(), f"secrets.key_file {path}")
    except OSError as exc:
        raise ConfigError(f"secrets.key_file {path}: cannot be read: {exc.strerror}") from exc


def _store(url_text: str, key: str) -> None:
    """SQLite: the file's folder is creatable; any other store answers a query."""
    try:
        url = make_url(url_text)
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"{key}: {url_text!r} is not a database URL") from exc
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            database = Path(url.database)
            usable = database.is_file() and os.access(database, os.R_OK | os.W_OK)
            if database.exists() and not usable:
                raise ConfigError(f"{key}: the SQLite file {database} is not a writable file")
            _creatable(database.parent, f"{key}: the SQLite file's folder")
        return
    _reach(url, key)


def _reach(url: URL, key: str) -> None:
    """Connect and run SELECT 1, a few times before giving up."""
    shown = url.render_as_string(hide_password=True)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(url, connect_args={"connect_timeout": STORE_CONNECT_TIMEOUT})
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
        raise ConfigError(f"{key}: {shown} is not a supported database URL") from exc
    reason = ""
    try:
        for attempt in range(STORE_ATTEMPTS):
            if attempt:
                time.sleep(STORE_RETRY_SECONDS)
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return
            except sa_exc.DBAPIError as exc:
                reason = _first_line(str(exc.orig))
    finally:
        engine.dispose()
    raise ConfigError(f"{key}: cannot reach {shown} after {STORE_ATTEMPTS} attempts: {reason}")


def _first_line(message: str) -> str:
    return next((line.strip() for line in message.splitlines() if line.strip()), "no reason given")


def _ca_file(path: Path) -> None:
    """`scan.trusted_ca_file` is a readable file of PEM certificates."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"scan.trusted_ca_file {path}: not found") from exc
    except OSError as exc:
        raise ConfigError(f"scan.trusted_ca_file {path}: cannot be read: {exc.strerror}") from exc
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"scan.trusted_ca_file {path}: holds no readable PEM certificate"
        ) from exc


def _password_file(path: Path) -> None:
    """`rotation.pkcs12_password_file` is a readable file only this user may read."""
    key = f"rotation.pkcs12_password_file {path}"
    if not path.is_file():
        raise ConfigError(f"{key}: {'is not a file' if path.exists() else 'not found'}")
    try:
        with path.open("rb") as handle:
            refuse_shared(handle.fileno(), key)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot be read: {exc.strerror}") from exc


def _alert_url(index: int, url: str) -> None:
    """An alert URL that apprise can parse (shown with only its scheme: URLs hold secrets)."""
    scheme, sep, _ = url.partition("://")
    shown = f"{scheme}://…" if sep else "(not a URL)"
    quiet = logging.getLogger("apprise")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        plugin = apprise.Apprise.instantiate(url)
    finally:
        quiet.setLevel(level)
    if not plugin:
        raise ConfigError(f"alerts.urls[{index}] {shown}: not a URL apprise can send to")


_BIND_REASONS = {
    errno.EADDRINUSE: "is in use by another process (is certwatch already running?)",
    errno.EACCES: "needs privileges to bind (a port below 1024: CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "is not an address of this machine",
}


def free_port(host: str, port: int, key: str) -> socket.socket:
    """A listening-ready socket bound to host:port (SO_REUSEADDR, as the servers bind), or
    ConfigError naming `key` and why it cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"{key}: the host {host!r} does not resolve: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = _BIND_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(f"{key}: {host}:{port} {reason}") from exc
    return sock
