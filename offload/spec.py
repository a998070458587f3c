"""The data plane's input: an immutable snapshot of every listener to serve.

The control plane builds a `Snapshot` from its store and hands it to
`offload.workers.ProxyControl.apply`; the proxy diffs it against what runs.
Everything here is plain, hashable, comparable data: two equal `ListenerSpec`s
mean nothing about that listener needs to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TLS_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class Backend:
    """One backend server of a listener's server group."""

    host: str
    port: int
    weight: int = 100


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
    """Everything one TLS listener needs to serve; `ca_pem` set means mutual TLS."""

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


@dataclass(frozen=True)
class Snapshot:
    """The whole desired state at one revision; only running listeners appear."""

    revision: int
    listeners: tuple[ListenerSpec, ...] = field(default_factory=tuple)
