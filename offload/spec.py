"""The data plane's input: an immutable snapshot of every listener to serve.

The control plane builds a `Snapshot` from its store and hands it to
`offload.workers.ProxyControl.apply`; the proxy diffs it against what runs.
Everything here is plain, hashable, comparable data: two equal `ListenerSpec`s
mean nothing about that listener needs to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TLS_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
TICKET_KEY_SIZE = 80
# The cloud original's ALPN policies: the protocols a listener selects, most preferred first
# (the server's order wins over the client's).
ALPN_POLICIES: dict[str, tuple[str, ...]] = {
    "HTTP1Only": ("http/1.1", "http/1.0"),
    "HTTP2Only": ("h2",),
    "HTTP2Optional": ("http/1.1", "http/1.0", "h2"),
    "HTTP2Preferred": ("h2", "http/1.1", "http/1.0"),
}
ACME_TLS_ALPN = "acme-tls/1"


@dataclass(frozen=True)
class Backend:
    """One backend server of a listener's server group."""

    host: str
    port: int
    weight: int = 100


@dataclass(frozen=True)
class HealthCheck:
    """TCP connect checks of a server group's servers (SPEC §4 "Backend health checks").

    A server is checked every `interval` seconds (a connect bounded by `connect_timeout`, on
    `connect_port`, or the server's own port when None); it goes down after
    `unhealthy_threshold` failures in a row and up again after `healthy_threshold` successes.
    """

    interval: float = 10.0
    connect_timeout: float = 5.0
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3
    connect_port: int | None = None


@dataclass(frozen=True)
class CertChain:
    """A server certificate as served: PEM leaf first then intermediates, and its key.

    `names` are the DNS names the leaf covers (SANs, else the common name), used
    for SNI selection; exact names and `*.example.com` wildcards.
    """

    chain_pem: str
    key_pem: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListenerSpec:
    """Everything one TLS listener needs to serve; `ca_pem` set means mutual TLS (the
    subjects of its certificates are sent as acceptable client CA names).

    `alpn_policy`: a key of ALPN_POLICIES, or None (ALPN off: offers are ignored, never
    refused); with a policy and no protocol in common, none is selected either.
    `proxy_protocol`: send a PROXY protocol v2 header (client and listener address, the SNI
    name as PP2_TYPE_AUTHORITY) to the backend before the first byte.
    `cps` / `max_connections`: new connections a second / open connections the listener
    accepts (0: unlimited); beyond them a new connection is closed at once and counted as
    `rate_limited`; both hold for the listener as a whole, over every worker.
    `health_check` (None: no checks) applies to the servers of `server_group_id`, which
    name them in the metrics.
    """

    listener_id: str
    address: str
    port: int
    default_cert: CertChain
    backends: tuple[Backend, ...]
    additional_certs: tuple[CertChain, ...] = ()
    ca_pem: str | None = None
    tls_versions: tuple[str, ...] = ("TLSv1.2",)
    ciphers: tuple[str, ...] = ()
    idle_timeout: float = 900.0
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    protocol: str = "TCPSSL"
    server_group_id: str = ""
    health_check: HealthCheck | None = None
    alpn_policy: str | None = None
    proxy_protocol: bool = False
    cps: int = 0
    max_connections: int = 0


@dataclass(frozen=True)
class ChallengeCert:
    """An ACME tls-alpn-01 challenge (RFC 8737) the proxy answers while it is pending.

    `name`: the DNS name being validated (lower case, no wildcard); `chain_pem`/`key_pem`:
    the self-signed challenge certificate (with its critical acmeIdentifier extension) and
    its key. On every TLS listener, a handshake whose SNI is `name` and that offers ALPN
    `acme-tls/1` is served this certificate with `acme-tls/1` selected, and the connection is
    closed right after the handshake (no backend); every other handshake is untouched.
    """

    name: str
    chain_pem: str = field(repr=False)
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class TicketKey:
    """A session ticket key: 80 random bytes (name 16, AES-256 key 32, HMAC-SHA256 key 32)."""

    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != TICKET_KEY_SIZE:
            raise ValueError(f"a ticket key has {TICKET_KEY_SIZE} bytes")

    @classmethod
    def generate(cls) -> TicketKey:
        """A new random key."""
        return cls(os.urandom(TICKET_KEY_SIZE))


@dataclass(frozen=True)
class Snapshot:
    """The whole desired state at one revision; only running listeners appear.

    `ticket_keys`: the session ticket keys of every listener on every worker and node, the
    one that encrypts first, then those still accepted (rotated by the control plane).
    `challenges`: the pending ACME tls-alpn-01 challenges, at most one per name (see
    `ChallengeCert`); the ACME client puts one here when it asks for validation and takes it
    away once the authorization is settled. A challenge whose certificate cannot be loaded
    fails the apply as `ApplyError` under the key `challenge:<name>`.
    """

    revision: int
    listeners: tuple[ListenerSpec, ...] = field(default_factory=tuple)
    ticket_keys: tuple[TicketKey, ...] = ()
    challenges: tuple[ChallengeCert, ...] = ()
