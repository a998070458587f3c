"""The store's tables (SQLModel). Private keys are stored encrypted; no API view carries them.

Times are stored as UTC and always read back as aware datetimes.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    LargeBinary,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


class Role(StrEnum):
    """What a certificate is to a listener: its default, an additional (SNI) one, or a CA."""

    DEFAULT = "default"
    ADDITIONAL = "additional"
    CA = "ca"


class ListenerStatus(StrEnum):
    """Whether a listener accepts connections."""

    RUNNING = "Running"
    STOPPED = "Stopped"


class StagedStatus(StrEnum):
    """Where a staged certificate stands."""

    PENDING = "Pending"
    APPLIED = "Applied"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"


class RotationResult(StrEnum):
    """The result of one rotation or rollback; `InProgress` until it is settled."""

    IN_PROGRESS = "InProgress"
    APPLIED = "Applied"
    ROLLED_BACK = "RolledBack"
    REJECTED = "Rejected"


class RequestStatus(StrEnum):
    """Where an ACME certificate request stands (`Failed` is retried at `next_attempt_at`)."""

    PENDING = "Pending"
    ISSUED = "Issued"
    FAILED = "Failed"


class RevocationStatus(StrEnum):
    """What the last revocation check of a certificate found (`unknown`: no valid answer)."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC and returned aware, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        """Store aware datetimes as naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        """Read back as aware UTC."""
        return None if value is None else value.replace(tzinfo=dt.UTC)


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _json(**kwargs: Any) -> Any:
    return Field(sa_type=JSON, **kwargs)


def _text(**kwargs: Any) -> Any:
    return Field(sa_type=Text, **kwargs)


class Certificate(SQLModel, table=True):
    """A certificate of the inventory, with its chain and (for Server) its encrypted key."""

    __tablename__ = "certificates"

    id: str = Field(primary_key=True)
    name: str
    type: str = Field(index=True)
    chain_pem: str = _text()
    key_encrypted: bytes | None = Field(default=None, sa_type=LargeBinary)
    managed: bool = False
    fingerprint: str = Field(index=True)
    common_name: str
    sans: list[str] = _json(default_factory=list)
    issuer: str
    serial_number: str
    not_before: dt.datetime = _time()
    not_after: dt.datetime = _time(index=True)
    key_algorithm: str
    key_size: int
    signature_algorithm: str
    chain_length: int
    warnings: list[str] = _json(default_factory=list)
    created_at: dt.datetime = _time()


class ChainEntry(SQLModel, table=True):
    """One certificate above a leaf in its uploaded chain (position 1 = first intermediate)."""

    __tablename__ = "chain_entries"

    certificate_id: str = Field(foreign_key="certificates.id", primary_key=True)
    position: int = Field(primary_key=True)
    common_name: str
    fingerprint: str
    not_before: dt.datetime = _time()
    not_after: dt.datetime = _time()


class LoadBalancer(SQLModel, table=True):
    """An instance grouping listeners; the additional-certificate quota is per instance."""

    __tablename__ = "load_balancers"

    id: str = Field(primary_key=True)
    name: str
    created_at: dt.datetime = _time()


class ServerGroup(SQLModel, table=True):
    """Backend servers: a list of {ServerIp, Port, Weight}, and their health check: the whole
    HealthCheckConfig as the API shows it (None: never configured, so no checks)."""

    __tablename__ = "server_groups"

    id: str = Field(primary_key=True)
    name: str
    servers: list[dict[str, Any]] = _json(default_factory=list)
    health_check: dict[str, Any] | None = _json(default=None, nullable=True)
    created_at: dt.datetime = _time()


class SecurityPolicy(SQLModel, table=True):
    """A custom TLS security policy (system policies live in code)."""

    __tablename__ = "security_policies"

    id: str = Field(primary_key=True)
    name: str
    tls_versions: list[str] = _json(default_factory=list)
    ciphers: list[str] = _json(default_factory=list)
    created_at: dt.datetime = _time()


class Listener(SQLModel, table=True):
    """A TCPSSL listener of a load balancer."""

    __tablename__ = "listeners"
    __table_args__ = (UniqueConstraint("address", "port", name="uq_listener_address_port"),)

    id: str = Field(primary_key=True)
    load_balancer_id: str = Field(foreign_key="load_balancers.id", index=True)
    protocol: str
    address: str
    port: int
    server_group_id: str = Field(foreign_key="server_groups.id")
    security_policy_id: str
    ca_enabled: bool = False
    idle_timeout: int = 900
    description: str | None = None
    alert_thresholds_days: list[int] | None = _json(default=None, nullable=True)
    status: str = "Running"
    created_at: dt.datetime = _time()
    # The revision of the last change to what this listener serves (`changes.stamps`).
    revision: int = 0
    alpn_enabled: bool = False
    alpn_policy: str | None = None
    proxy_protocol_enabled: bool = False
    # New connections a second / open connections accepted; 0: unlimited.
    cps: int = 0
    max_connections: int = 0


class ListenerCertificate(SQLModel, table=True):
    """A certificate a listener uses, in a role: `default`, `additional` or `ca`."""

    __tablename__ = "listener_certificates"
    __table_args__ = (
        Index(
            "uq_listener_one_default",
            "listener_id",
            unique=True,
            sqlite_where=text("role = 'default'"),
            postgresql_where=text("role = 'default'"),
        ),
    )

    listener_id: str = Field(foreign_key="listeners.id", primary_key=True)
    certificate_id: str = Field(foreign_key="certificates.id", primary_key=True, index=True)
    role: str = Field(primary_key=True)
    created_at: dt.datetime = _time()


class StagedCertificate(SQLModel, table=True):
    """A renewed certificate waiting to be rotated in."""

    __tablename__ = "staged_certificates"

    id: str = Field(primary_key=True)
    certificate_id: str = Field(foreign_key="certificates.id", index=True)
    listener_id: str | None = Field(default=None, index=True)
    status: str = Field(default="Pending", index=True)
    reason: str | None = None
    source: str = "api"
    created_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()


class RotationEvent(SQLModel, table=True):
    """One entry of a listener's certificate history; `result` `InProgress` until settled."""

    __tablename__ = "rotation_events"
    __table_args__ = (Index("uq_rotation_events_listener_seq", "listener_id", "seq", unique=True),)

    id: str = Field(primary_key=True)
    listener_id: str = Field(index=True)
    seq: int = 0
    time: dt.datetime = _time(index=True)
    actor: str
    old_certificate_id: str | None = None
    new_certificate_id: str | None = None
    role: str = "default"
    result: str
    reason: str | None = None
    staged_certificate_id: str | None = None


class Alert(SQLModel, table=True):
    """An expiry alert for a certificate in use at one threshold; sent once to each alert URL.

    `delivered_to` holds a digest (`notify.url_key`) of every URL that took it, so a retry goes
    only to the URLs that failed; `delivered` once every configured URL took it. `attempts`
    counts sends: each delivery adds the attempts the URL that needed most made (apprise
    retries a failing URL within the delivery, `notify.RetryPolicy`).
    """

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("certificate_id", "threshold", name="uq_alert_threshold"),)

    id: str = Field(primary_key=True)
    certificate_id: str = Field(index=True)
    threshold: str
    listener_ids: list[str] = _json(default_factory=list)
    title: str = _text(default="")
    body: str = _text(default="")
    created_at: dt.datetime = _time()
    sent_at: dt.datetime | None = _time(default=None, nullable=True)
    delivered: bool = False
    attempts: int = 0
    last_error: str | None = _text(default=None, nullable=True)
    delivered_to: list[str] = _json(default_factory=list)


class ProbeResult(SQLModel, table=True):
    """The latest live probe of one (target, server name), kept for metrics on every node."""

    __tablename__ = "probe_results"

    target: str = Field(primary_key=True)
    server_name: str = Field(primary_key=True)
    listener_id: str | None = None
    success: bool
    served_fingerprint: str | None = None
    served_not_after: dt.datetime | None = _time(default=None, nullable=True)
    chain_complete: bool = False
    matches_configured: bool | None = None
    error: str | None = _text(default=None, nullable=True)
    warnings: list[str] = _json(default_factory=list)
    probed_at: dt.datetime = _time()


class RevocationState(SQLModel, table=True):
    """The last revocation check of one certificate of a chain (position 0 = the leaf).

    `status` `unknown` with an `error` when the source could not tell; a certificate once
    found `revoked` keeps that status (and its time and reason) while its source is down.
    """

    __tablename__ = "revocation_states"

    certificate_id: str = Field(primary_key=True)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    common_name: str
    source: str
    url: str = _text()
    status: str
    revoked_at: dt.datetime | None = _time(default=None, nullable=True)
    reason: str | None = None
    error: str | None = _text(default=None, nullable=True)
    checked_at: dt.datetime = _time()


class CrlCacheEntry(SQLModel, table=True):
    """A fetched CRL (DER, signature checked when fetched and at each use), kept until its
    `nextUpdate` so scans and restarts do not fetch it again before then."""

    __tablename__ = "crl_cache"

    url: str = Field(sa_type=Text, primary_key=True)
    der: bytes = Field(sa_type=LargeBinary)
    this_update: dt.datetime = _time()
    next_update: dt.datetime = _time(index=True)
    fetched_at: dt.datetime = _time()


class ScanRun(SQLModel, table=True):
    """One scan: when it ran and what it counted."""

    __tablename__ = "scan_runs"

    id: str = Field(primary_key=True)
    started_at: dt.datetime = _time(index=True)
    finished_at: dt.datetime | None = _time(default=None, nullable=True)
    success: bool = False
    counts: dict[str, Any] = _json(default_factory=dict)


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a `ClientToken`, replayed for repeats."""

    __tablename__ = "idempotency_records"

    token: str = Field(primary_key=True)
    action: str = Field(primary_key=True)
    params_digest: str
    response: dict[str, Any] = _json(default_factory=dict)
    created_at: dt.datetime = _time()


class StateRevision(SQLModel, table=True):
    """A single row counting changes to what the proxy serves; proxy nodes poll it."""

    __tablename__ = "state_revision"

    id: int = Field(default=1, primary_key=True)
    revision: int = 0


class NodeState(SQLModel, table=True):
    """The snapshot revision one node's proxy serves, and when the node last said so."""

    __tablename__ = "node_states"

    node_id: str = Field(primary_key=True)
    revision: int
    serves: bool
    heartbeat_at: dt.datetime = _time()


class SessionTicketKey(SQLModel, table=True):
    """A session ticket key of the data plane (80 random bytes, sealed by the key box), the
    one that encrypts during its 12-hour `epoch` (seconds since 1970 // 43200)."""

    __tablename__ = "session_ticket_keys"

    epoch: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    key_sealed: bytes = Field(sa_type=LargeBinary)
    created_at: dt.datetime = _time()


class AcmeAccount(SQLModel, table=True):
    """The ACME account of one directory: its key (sealed by the key box) and registration."""

    __tablename__ = "acme_accounts"

    directory_url: str = Field(primary_key=True)
    key_sealed: bytes = Field(sa_type=LargeBinary)
    registration: str = _text()
    created_at: dt.datetime = _time()


class CertificateRequest(SQLModel, table=True):
    """A certificate ordered through ACME (a first issue or a renewal) and how it stands."""

    __tablename__ = "certificate_requests"

    id: str = Field(primary_key=True)
    domain_names: list[str] = _json(default_factory=list)
    certificate_name: str | None = None
    key_type: str
    listener_id: str | None = None
    role: str = "default"
    renews_certificate_id: str | None = Field(default=None, index=True)
    status: str = Field(default="Pending", index=True)
    reason: str | None = _text(default=None, nullable=True)
    certificate_id: str | None = None
    failures: int = 0
    next_attempt_at: dt.datetime = _time(index=True)
    created_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()


class AcmeRenewalInfo(SQLModel, table=True):
    """What the ACME server's renewal information (RFC 9773) said of one managed certificate:
    its suggested window, the time picked in it, and when to ask again (Retry-After)."""

    __tablename__ = "acme_renewal_info"

    certificate_id: str = Field(primary_key=True)
    window_start: dt.datetime = _time()
    window_end: dt.datetime = _time()
    renew_at: dt.datetime = _time()
    next_check_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()
