"""Configuration: a TOML file, then `CERTWATCH_<SECTION>_<KEY>` environment overrides.

Durations are seconds or strings such as "90s", "15m", "1h", "2d". Unknown keys and bad
values are errors that name the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "90s", "15m", "1h", "1d", "1h30m"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 15m, 1h)")
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError("a duration is a number of seconds or a string such as '15m'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


def split_address(value: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" or "[IPv6]:PORT"; ValueError says what is missing or wrong."""
    host, colon, port = value.rpartition(":")
    if not colon or (host.startswith("[") != host.endswith("]")) or ("]" in port):
        raise ValueError(f"{value!r} has no port: use HOST:PORT, e.g. 127.0.0.1:9180")
    if not host:
        raise ValueError(f"{value!r} has no host: use HOST:PORT, e.g. 127.0.0.1:9180")
    if not port.isdigit():
        raise ValueError(f"{value!r}: the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port {port} is outside 1-65535")
    bare = host[1:-1] if host.startswith("[") else host
    if ":" in bare and not host.startswith("["):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:9180")
    return bare, int(port)


def _host_port(value: str) -> str:
    split_address(value)
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
"""A `HOST:PORT` (or `[IPv6]:PORT`) string, checked by `split_address`."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiConfig(_Section):
    """The management API: where, the token, and how long a client may take to send a request's
    headers, then its body, and how many connections may be open at once."""

    listen: HostPort = "127.0.0.1:9180"
    token: str | None = None
    header_timeout: Duration = Field(default=10.0, gt=0)
    body_timeout: Duration = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, ge=1, le=65536)

    @property
    def host(self) -> str:
        """The host (or address) the API binds, without IPv6 brackets."""
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port the API binds."""
        return split_address(self.listen)[1]


class StoreConfig(_Section):
    """Where state lives: None means a SQLite file in `data_dir`."""

    url: str | None = None


def _target_table(value: object) -> object:
    """`"host:port"` / `"host:port/name"` / `"host:port/"` as the table they stand for."""
    if isinstance(value, str):
        address, slash, name = value.partition("/")
        return {"address": address, "server_name": name if slash else None}
    return value


class ScanTarget(_Section):
    """An external endpoint the scan probes: `address` (HOST:PORT), the server name it sends
    (None: the host when it is a DNS name; "": no SNI), and its own alert thresholds (None:
    `alerts.thresholds_days`)."""

    address: HostPort
    server_name: str | None = None
    thresholds_days: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)

    @property
    def host(self) -> str:
        """The host (or address) to connect to, without IPv6 brackets."""
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        """The TCP port to connect to."""
        return split_address(self.address)[1]

    @property
    def sent_name(self) -> str:
        """The server name the probe sends ("" for none): `server_name`, else the host when
        it is a DNS name (an IP address sends none)."""
        if self.server_name is not None:
            return self.server_name
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return ""


class ScanConfig(_Section):
    """Scans: how often, what else to probe, which extra roots to trust."""

    interval: Duration = Field(default=3600.0, gt=0)
    targets: list[Annotated[ScanTarget, BeforeValidator(_target_table)]] = Field(
        default_factory=list
    )
    trusted_ca_file: str | None = None
    probe_timeout: Duration = Field(default=5.0, gt=0)
    probe_concurrency: int = Field(default=64, ge=1, le=1024)


class AlertsConfig(_Section):
    """Alert thresholds and delivery URLs (apprise)."""

    thresholds_days: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [30, 7, 1]
    )
    urls: list[str] = Field(default_factory=list)


class RotationConfig(_Section):
    """Rotation from the staging store: `watch` stages a dropped file within seconds (else at
    the next scan); the PKCS#12 password opens `.pfx`/`.p12` drops."""

    auto: bool = True
    before_days: int = Field(default=30, ge=0)
    staging_dir: str | None = None
    watch: bool = True
    pkcs12_password: str | None = None
    pkcs12_password_file: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> RotationConfig:
        if self.pkcs12_password is not None and self.pkcs12_password_file is not None:
            raise ValueError(
                "pkcs12_password and pkcs12_password_file: set one of them, not both"
            )
        return self


class ProxyConfig(_Section):
    """The bundled offload proxy; `workers` 0 runs no data plane on this node."""

    workers: int | None = Field(default=None, ge=0, le=256)
    drain_timeout: Duration = 30.0
    reload_interval: Duration = Field(default=2.0, gt=0)
    ack_timeout: Duration = Field(default=5.0, gt=0)
    handshake_timeout: Duration = Field(default=10.0, gt=0)
    connect_timeout: Duration = Field(default=5.0, gt=0)


class SecretsConfig(_Section):
    """The key that encrypts private keys at rest."""

    key_file: str | None = None


AcmeChallenge = Literal["tls-alpn-01", "http-01", "dns-01"]
KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


class AcmeConfig(_Section):
    """Issuing and renewing through an ACME server; off while `directory_url` is unset."""

    directory_url: str | None = None
    email: str | None = None
    ca_bundle: str | None = None
    challenge: AcmeChallenge = "tls-alpn-01"
    http_listen: HostPort = "0.0.0.0:80"
    dns_hook: str | None = None
    key_type: KeyType = "ec-p256"
    eab_kid: str = ""
    eab_hmac_key: str = ""

    @property
    def enabled(self) -> bool:
        """Whether an ACME server is configured."""
        return bool(self.directory_url)


class Config(_Section):
    """The whole configuration, with the SPEC's defaults."""

    data_dir: str = "data"
    api: ApiConfig = Field(default_factory=ApiConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    rotation: RotationConfig = Field(default_factory=RotationConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    acme: AcmeConfig = Field(default_factory=AcmeConfig)

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the store."""
        return self.store.url or f"sqlite:///{Path(self.data_dir) / 'certwatch.db'}"

    @property
    def key_file(self) -> Path:
        """The secrets key file."""
        return Path(self.secrets.key_file or Path(self.data_dir) / "secrets.key")

    @property
    def staging_dir(self) -> Path:
        """The directory watched for staged certificates."""
        return Path(self.rotation.staging_dir or Path(self.data_dir) / "staging")

    @property
    def proxy_workers(self) -> int:
        """How many proxy worker processes to run."""
        return (os.cpu_count() or 1) if self.proxy.workers is None else self.proxy.workers


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and why."""


NOT_CONFIG = {"CERTWATCH_API_URL", "CERTWATCH_LOG_LEVEL"}
"""Variables of the CLI, not the service (test-harness ones start with CERTWATCH_TEST_)."""


def _env_value(raw: str) -> Any:
    """An environment string as JSON where it parses (lists, numbers, booleans), else as text."""
    try:
        return json.loads(raw)
    except ValueError:
        if "," in raw:
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    sections = {name for name, f in Config.model_fields.items() if f.annotation is not str}
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if (
            not name.startswith("CERTWATCH_")
            or name in NOT_CONFIG
            or name.startswith("CERTWATCH_TEST_")
        ):
            continue
        key = name.removeprefix("CERTWATCH_").lower()
        section, _, rest = key.partition("_")
        if section in sections and rest:
            out.setdefault(section, {})[rest] = _env_value(raw)
        elif key in Config.model_fields:
            out[key] = raw
        else:
            raise ConfigError(f"environment variable {name}: no such configuration key")
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides and validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path}: not found") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {path}: is a folder, not a TOML file") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot be read: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path}: not UTF-8 text") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(os.environ if env is None else env))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {_problem(err)}" for err in exc.errors()
        )
        raise ConfigError(f"configuration ({source}): {problems}") from exc


def _problem(err: Any) -> str:
    """Pydantic's message for one error, without its "Value error, " prefix."""
    cause = err.get("ctx", {}).get("error")
    return str(cause) if isinstance(cause, ValueError) else str(err["msg"])
