"""Live TLS probe: what an endpoint really serves for one server name, and whether it verifies.

The handshake runs over a memory BIO so that the served chain is read even when the server
then refuses us (a mutual-TLS listener asks for a client certificate the probe does not have).
Chain verification is `pki.verify.verify_chain`, the same rule uploads and rotation use; its
strict-profile findings travel with the outcome as warnings.

One refused handshake is not an outage: a probe that gets no certificate is tried again, up
to `ATTEMPTS` times (each within the time limit, `RETRY_PAUSE` seconds apart), and its outcome
carries the time it was taken (`taken_at`, the clock read when the last attempt ended).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509 as cx509

from certwatch import clock
from certwatch.pki import x509
from certwatch.pki.verify import verify_chain

ATTEMPTS = 3
RETRY_PAUSE = 0.25
WILDCARD_LABEL = "probe"
_WILDCARD_ADDRESSES = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_name(name: str) -> str:
    """The server name to send for a served DNS name: `*.example.com` → `probe.example.com`."""
    return f"{WILDCARD_LABEL}.{name[2:]}" if name.startswith("*.") else name


def connect_host(address: str) -> str:
    """Where to reach a listener bound to `address` (a wildcard address: loopback)."""
    return _WILDCARD_ADDRESSES.get(address, address)


@dataclass(frozen=True)
class ProbeTarget:
    """One endpoint and the server name to send (None: no SNI)."""

    target: str
    host: str
    port: int
    server_name: str | None
    listener_id: str | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe saw: `success` means the server presented its certificate chain."""

    target: ProbeTarget
    success: bool
    taken_at: dt.datetime
    attempts: int = 1
    chain: tuple[cx509.Certificate, ...] = field(default=())
    chain_error: str | None = None
    error: str | None = None
    findings: tuple[str, ...] = ()

    @property
    def leaf(self) -> cx509.Certificate | None:
        """The served leaf certificate, if any was served."""
        return self.chain[0] if self.chain else None

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the served leaf."""
        return x509.fingerprint(self.chain[0]) if self.chain else None

    @property
    def chain_complete(self) -> bool:
        """The served chain verifies to a trusted root."""
        return self.success and self.chain_error is None


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def _served_chain(obj: ssl.SSLObject) -> tuple[cx509.Certificate, ...]:
    raw = obj._sslobj.get_unverified_chain()  # type: ignore[attr-defined]  # public from 3.13
    return tuple(
        cx509.load_der_x509_certificate(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        for cert in raw or ()
    )


async def _handshake(target: ProbeTarget, ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, str | None]:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=target.server_name)
    error = None
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                data = await reader.read(65536)
                if not data:
                    error = "connection closed during the TLS handshake"
                    break
                incoming.write(data)
            except ssl.SSLError as exc:
                error = f"TLS handshake failed: {exc.reason or exc}"
                break
        if outgoing.pending:
            writer.write(outgoing.read())
    finally:
        writer.close()
    return obj, error


async def _attempt(
    target: ProbeTarget, roots: Sequence[cx509.Certificate], now: dt.datetime, time_limit: float
) -> ProbeOutcome:
    try:
        obj, error = await asyncio.wait_for(_handshake(target, _client_context()), time_limit)
    except TimeoutError:
        return ProbeOutcome(
            target, False, clock.now(), error=f"no TLS handshake within {time_limit:g}s"
        )
    except OSError as exc:
        return ProbeOutcome(
            target, False, clock.now(), error=f"cannot connect: {exc.strerror or exc}"
        )
    chain = _served_chain(obj)
    if not chain:
        return ProbeOutcome(
            target, False, clock.now(), error=error or "the server sent no certificate"
        )
    verdict = verify_chain(chain, roots, now, target.server_name)
    return ProbeOutcome(
        target, True, clock.now(), chain=chain, chain_error=verdict.problem, error=error,
        findings=verdict.findings,
    )


async def probe(
    target: ProbeTarget, roots: Sequence[cx509.Certificate], now: dt.datetime, time_limit: float
) -> ProbeOutcome:
    """Handshake with one endpoint, retried while it fails (see the module docstring); a
    failure is a result, never an exception."""
    outcome = await _attempt(target, roots, now, time_limit)
    for attempt in range(2, ATTEMPTS + 1):
        if outcome.success:
            break
        await asyncio.sleep(RETRY_PAUSE)
        outcome = replace(await _attempt(target, roots, now, time_limit), attempts=attempt)
    return outcome


async def probe_all(
    targets: Sequence[ProbeTarget],
    roots: Sequence[cx509.Certificate],
    now: dt.datetime,
    time_limit: float,
    concurrency: int,
) -> list[ProbeOutcome]:
    """Probe every target, at most `concurrency` at a time, in the order given."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(target: ProbeTarget) -> ProbeOutcome:
        async with gate:
            return await probe(target, roots, now, time_limit)

    return list(await asyncio.gather(*(bounded(t) for t in targets)))


def probe_sync(
    targets: Sequence[ProbeTarget],
    roots: Sequence[cx509.Certificate],
    now: dt.datetime,
    time_limit: float = 5.0,
    concurrency: int = 64,
) -> list[ProbeOutcome]:
    """`probe_all` for callers outside an event loop (scan and rotation jobs)."""
    return asyncio.run(probe_all(targets, roots, now, time_limit, concurrency))
