"""Build a listener's SSL contexts from its spec, and report what a policy cannot enforce.

Rules (see DESIGN.md, "Traps known in Python's ssl"):
- After SNI switches a handshake to another context (`SSL_set_SSL_CTX`), verify mode and
  min/max version stay those of the base context, so every per-certificate context gets
  the very same policy, verify mode and CA store as the base one.
- Contexts are never modified once built: a change builds new ones and swaps the
  reference that new connections read.
- TLS 1.0/1.1 need `@SECLEVEL=0` on OpenSSL 3, added only when the policy allows them.
- TLS 1.3 suites are exactly the policy's (set through offload.tlscontext, since Python's
  `ssl` cannot), CCM ones included; a policy naming none keeps OpenSSL's default suites.
- A session resumes only where a full handshake would be accepted the same way: the
  session id context is a digest of the listener id, its CA bundle and its policy, so a
  replaced CA or policy (or another listener) turns a resumption into a full handshake.
  Renegotiation is refused.
- With mutual TLS every context names the CA certificates' subjects in its
  CertificateRequest; with an ALPN policy every context selects from its list.
- An ACME challenge context serves only its challenge certificate, at TLS 1.2 or 1.3, asks
  for no client certificate and issues no ticket (see offload.tlscontext).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Iterable

from offload.sni import SniTable
from offload.spec import ALPN_POLICIES, TLS_VERSIONS, CertChain, ChallengeCert, ListenerSpec
from offload.tlscontext import (
    Challenges,
    TicketKeys,
    TlsContext,
    alpn_wire,
    set_ciphersuites,
    set_client_ca_list,
)

_VERSION = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_HAS_VERSION = {
    "TLSv1.0": ssl.HAS_TLSv1,
    "TLSv1.1": ssl.HAS_TLSv1_1,
    "TLSv1.2": ssl.HAS_TLSv1_2,
    "TLSv1.3": ssl.HAS_TLSv1_3,
}
_NO_VERSION = {
    "TLSv1.0": ssl.OP_NO_TLSv1,
    "TLSv1.1": ssl.OP_NO_TLSv1_1,
    "TLSv1.2": ssl.OP_NO_TLSv1_2,
    "TLSv1.3": ssl.OP_NO_TLSv1_3,
}
# `get_ciphers()` names the oldest protocol a cipher works with.
_CIPHER_PROTOCOLS = {
    "TLSv1.0": {"SSLv3", "TLSv1.0"},
    "TLSv1.1": {"SSLv3", "TLSv1.0"},
    "TLSv1.2": {"SSLv3", "TLSv1.0", "TLSv1.2"},
    "TLSv1.3": {"TLSv1.3"},
}
_HAS_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _is_suite(name: str) -> bool:
    return name.startswith("TLS_")


def _cipher_string(versions: Iterable[str], ciphers: Iterable[str]) -> str:
    legacy = [c for c in ciphers if not _is_suite(c)]
    text = ":".join(legacy) or "DEFAULT"
    if {"TLSv1.0", "TLSv1.1"} & set(versions):
        text += ":@SECLEVEL=0"
    return text


def policy_context(tls_versions: Iterable[str], ciphers: Iterable[str]) -> ssl.SSLContext:
    """A server context enforcing versions and ciphers, with no certificate yet."""
    versions = [v for v in TLS_VERSIONS if v in set(tls_versions)]
    unknown = set(tls_versions) - set(TLS_VERSIONS)
    if unknown or not versions:
        raise ValueError(f"TLS versions must be a non-empty subset of {TLS_VERSIONS}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    with warnings.catch_warnings():
        # TLS 1.0/1.1 and OP_NO_TLS* are deprecated in Python, but policies ask for them.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = _VERSION[versions[0]]
        ctx.maximum_version = _VERSION[versions[-1]]
        low, high = TLS_VERSIONS.index(versions[0]), TLS_VERSIONS.index(versions[-1])
        for gap in TLS_VERSIONS[low:high]:
            if gap not in versions:
                ctx.options |= _NO_VERSION[gap]
    ctx.set_ciphers(_cipher_string(versions, ciphers))
    suites = [c for c in ciphers if _is_suite(c)]
    if suites:
        set_ciphersuites(ctx, ":".join(suites))
    return ctx


def _listener_context(spec: ListenerSpec, cert: CertChain) -> ssl.SSLContext:
    ctx = policy_context(spec.tls_versions, spec.ciphers)
    if spec.ca_pem is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=spec.ca_pem)
        set_client_ca_list(ctx, spec.ca_pem)
    _load_chain(ctx, cert)
    return ctx


def challenge_context(challenge: ChallengeCert) -> ssl.SSLContext:
    """The context answering one ACME tls-alpn-01 challenge; raises like `build_context`."""
    ctx = policy_context(("TLSv1.2", "TLSv1.3"), ())
    ctx.options |= ssl.OP_NO_TICKET
    _load_chain(ctx, CertChain(challenge.chain_pem, challenge.key_pem))
    return ctx


def alpn_list(spec: ListenerSpec) -> bytes | None:
    """The listener's ALPN preference list in wire format, None when ALPN is off."""
    if spec.alpn_policy is None:
        return None
    if spec.alpn_policy not in ALPN_POLICIES:
        raise ValueError(f"unknown ALPN policy {spec.alpn_policy!r}")
    return alpn_wire(ALPN_POLICIES[spec.alpn_policy])


def _load_chain(ctx: ssl.SSLContext, cert: CertChain) -> None:
    """Load chain and key. `ssl` reads only files, so on Linux they go to anonymous memory
    files (`memfd`, read through /proc/self/fd) and never to a file system; elsewhere to a
    private 0600 temporary directory, removed at once."""
    if _HAS_MEMFD:
        fds = [_memory_file(text) for text in (cert.chain_pem, cert.key_pem)]
        try:
            ctx.load_cert_chain(*(f"/proc/self/fd/{fd}" for fd in fds))
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:
        chain_path, key_path = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((chain_path, cert.chain_pem), (key_path, cert.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        ctx.load_cert_chain(chain_path, key_path)


def _memory_file(text: str) -> int:
    fd = os.memfd_create("certwatch-tls", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    return fd


def session_id_context(spec: ListenerSpec) -> bytes:
    """The 32 bytes a session of `spec` is bound to: listener, CA bundle and policy."""
    digest = hashlib.sha256()
    for part in (spec.listener_id, spec.ca_pem or "", *spec.tls_versions, "", *spec.ciphers):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.digest()


def build_context(
    spec: ListenerSpec, tickets: TicketKeys | None = None, challenges: Challenges | None = None
) -> TlsContext | None:
    """What new handshakes start from (None for plain TCP listeners); sessions are resumed
    with the `tickets` ring (shared by the worker's listeners) when given, and the worker's
    ACME `challenges` answered.

    Raises `ssl.SSLError`, `ValueError` or `OSError` when the material or policy is bad.
    """
    if spec.protocol == "TCP":
        return None
    base = _listener_context(spec, spec.default_cert)
    sid = session_id_context(spec)
    alpn = alpn_list(spec)
    if not spec.additional_certs:
        return TlsContext(
            base, tickets=tickets, session_id_context=sid, alpn=alpn, challenges=challenges
        )
    # Indexes, not contexts, in the table: -1 (the base context) stays on it.
    table = SniTable(
        [*((i, c.names) for i, c in enumerate(spec.additional_certs)),
         (-1, spec.default_cert.names)]
    )
    contexts = [_listener_context(spec, c) for c in spec.additional_certs]
    return TlsContext(
        base, contexts, table.lookup, tickets=tickets, session_id_context=sid, alpn=alpn,
        challenges=challenges,
    )


def _offered(versions: list[str], ciphers: list[str]) -> list[dict[str, str]]:
    try:
        return policy_context(versions, ciphers).get_ciphers()  # type: ignore[return-value]
    except ssl.SSLError:
        return []


def unenforceable(tls_versions: Iterable[str], ciphers: Iterable[str]) -> list[str]:
    """Versions, ciphers and TLS 1.3 suites of a policy this OpenSSL cannot honour.

    A version counts when OpenSSL lacks it or none of the policy's ciphers works at it; a
    cipher or suite when OpenSSL cannot offer it.
    """
    versions, wanted = list(tls_versions), list(ciphers)
    suites = [c for c in wanted if _is_suite(c)]
    usable = [
        c for c in wanted
        if not _is_suite(c) and any(o["name"] == c for o in _offered(versions, [c]))
    ]
    offered = _offered(versions, usable + suites)
    if not usable:  # below TLS 1.3 the context falls back to OpenSSL's defaults: none counts
        offered = [c for c in offered if c["protocol"] == "TLSv1.3"]
    names = {c["name"] for c in offered}
    result = [
        v for v in versions
        if not _HAS_VERSION.get(v, False)
        or not any(c["protocol"] in _CIPHER_PROTOCOLS[v] for c in offered)
    ]
    result += [c for c in wanted if c not in names]
    return result
