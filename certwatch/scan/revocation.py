"""The scan's revocation step: is any certificate of a chain in use revoked?

For each certificate of each chain (leaf first; a self-signed root is skipped) that names an
HTTP CRL distribution point, the CRL is fetched (bounded time and size), checked against the
certificate's issuer (`pki.revocation`), and kept in `crl_cache` until its nextUpdate, so
neither the next scan nor a restart fetches it again before then. Where no CRL is named but an
OCSP responder is, an OCSP request is POSTed. The issuer is looked for above the certificate in
its chain, then among the trusted roots.

What was found is stored per (certificate, chain position) in `revocation_states`, replacing
the previous check. A source that cannot tell (unreachable, too large, invalid, stale, signed
by another key) gives status `unknown` with the error: a warning, never a revocation; a
certificate already found revoked stays revoked. Each URL is fetched at most once per scan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from cryptography import x509 as cx509
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from certwatch.alerts.rules import Revocation
from certwatch.node import Node
from certwatch.pki import revocation
from certwatch.pki.revocation import RevocationUnavailable, Source, Verdict
from certwatch.pki.x509 import CertificateError, common_name, parse_chain
from certwatch.store.db import transaction
from certwatch.store.models import (
    Certificate,
    CrlCacheEntry,
    RevocationState,
    RevocationStatus,
    StagedCertificate,
    StagedStatus,
)

log = logging.getLogger(__name__)
MAX_CRL_BYTES = 10 * 1024 * 1024
MAX_OCSP_BYTES = 64 * 1024
UNAVAILABLE = "RevocationUnavailable"


def unavailable(source: str, common_name: str, position: int, error: str) -> str:
    """The warning for a revocation source that could not tell (scan report, log, API)."""
    which = "" if position == 0 else f" (chain position {position})"
    return f"{UNAVAILABLE}: {source.upper()} check of {common_name}{which} failed: {error}"


@dataclass(frozen=True)
class Finding:
    """The revocation check of one certificate of a chain (position 0 = the leaf)."""

    certificate_id: str
    position: int
    common_name: str
    source: Source
    url: str
    status: RevocationStatus
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    error: str | None = None

    @property
    def warning(self) -> str | None:
        """`RevocationUnavailable: …` when the source could not tell, else None."""
        if self.error is None:
            return None
        return unavailable(self.source, self.common_name, self.position, self.error)

    def as_row(self, now: dt.datetime) -> RevocationState:
        """The stored form."""
        return RevocationState(
            certificate_id=self.certificate_id,
            position=self.position,
            common_name=self.common_name,
            source=self.source,
            url=self.url,
            status=self.status,
            revoked_at=self.revoked_at,
            reason=self.reason,
            error=self.error,
            checked_at=now,
        )


@dataclass
class RevocationReport:
    """What one revocation step found, by certificate id."""

    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def revocation(self, certificate_id: str) -> Revocation | None:
        """The revoked certificate nearest the leaf of this chain, for the alert; or None."""
        return revoked_in(self.findings.get(certificate_id, ()))

    @property
    def revoked(self) -> set[str]:
        """Certificate ids whose chain has a revoked certificate."""
        return {cert_id for cert_id in self.findings if self.revocation(cert_id)}

    @property
    def checked(self) -> int:
        """How many certificates (of all chains) were checked."""
        return sum(len(found) for found in self.findings.values())

    @property
    def warnings(self) -> list[str]:
        """Every `RevocationUnavailable` warning, with the certificate id."""
        return [
            f"{f.certificate_id}: {f.warning}"
            for found in self.findings.values()
            for f in found
            if f.warning
        ]


def revoked_in(findings: Sequence[Finding]) -> Revocation | None:
    """The revoked certificate nearest the leaf among `findings`, as alerts name it."""
    hit = min(
        (f for f in findings if f.status == RevocationStatus.REVOKED),
        key=lambda f: f.position,
        default=None,
    )
    if hit is None:
        return None
    return Revocation(
        hit.position, hit.common_name, hit.source, hit.url, hit.revoked_at, hit.reason
    )


class _Sources:
    """The CRLs and OCSP responders of one scan: cached CRLs first, each URL fetched once."""

    def __init__(self, client: httpx.Client, cached: Mapping[str, bytes]) -> None:
        self._client = client
        self._cached = dict(cached)
        self._crls: dict[str, cx509.CertificateRevocationList | RevocationUnavailable] = {}
        self._fetched: dict[str, bytes] = {}
        self.accepted: dict[str, tuple[bytes, cx509.CertificateRevocationList]] = {}

    def _read(self, response: httpx.Response, url: str, limit: int) -> bytes:
        if response.status_code != 200:
            raise RevocationUnavailable(f"{url} answered HTTP {response.status_code}")
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise RevocationUnavailable(f"{url} sent more than {limit} bytes")
        return bytes(data)

    def _request(self, method: str, url: str, limit: int, content: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/ocsp-request"} if content is not None else {}
        try:
            with self._client.stream(method, url, content=content, headers=headers) as response:
                return self._read(response, url, limit)
        except httpx.HTTPError as exc:
            raise RevocationUnavailable(
                f"{url} could not be reached ({type(exc).__name__}: {exc})"
            ) from exc

    def _crl(self, url: str) -> cx509.CertificateRevocationList:
        known = self._crls.get(url)
        if isinstance(known, RevocationUnavailable):
            raise known
        if known is not None:
            return known
        try:
            data = self._cached.get(url)
            if data is None:
                data = self._fetched[url] = self._request("GET", url, MAX_CRL_BYTES)
            crl = revocation.parse_crl(data)
        except RevocationUnavailable as exc:
            self._crls[url] = exc
            raise
        self._crls[url] = crl
        return crl

    def crl_verdict(
        self, url: str, cert: cx509.Certificate, issuer: cx509.Certificate, now: dt.datetime
    ) -> Verdict:
        """The verdict of the CRL at `url` (checked against `issuer`)."""
        crl = self._crl(url)
        revocation.check_crl(crl, issuer, now)
        if url in self._fetched and crl.next_update_utc is not None:
            self.accepted[url] = (self._fetched[url], crl)
        return revocation.crl_verdict(crl, cert)

    def ocsp_verdict(
        self, url: str, cert: cx509.Certificate, issuer: cx509.Certificate, now: dt.datetime
    ) -> Verdict:
        """The verdict of the OCSP responder at `url`."""
        request = revocation.ocsp_request(cert, issuer)
        answer = self._request("POST", url, MAX_OCSP_BYTES, content=request)
        return revocation.ocsp_verdict(answer, cert, issuer, now)


def _check(
    cert_id: str,
    position: int,
    cert: cx509.Certificate,
    issuer: cx509.Certificate | None,
    sources: _Sources,
    now: dt.datetime,
) -> Finding | None:
    """One certificate's finding: by its CRLs, else by its OCSP responders; None: names none."""
    crls, responders = revocation.crl_urls(cert), revocation.ocsp_urls(cert)
    source: Source = "crl" if crls else "ocsp"
    urls = crls or responders
    if not urls:
        return None
    name = common_name(cert) or cert.subject.rfc4514_string()
    if issuer is None:
        return Finding(
            cert_id, position, name, source, urls[0], RevocationStatus.UNKNOWN,
            error="its issuer is neither in the chain nor among the trusted roots, so no "
            "answer can be verified",
        )
    errors = []
    for url in urls:
        try:
            if source == "crl":
                verdict = sources.crl_verdict(url, cert, issuer, now)
            else:
                verdict = sources.ocsp_verdict(url, cert, issuer, now)
        except RevocationUnavailable as exc:
            errors.append(str(exc))
            continue
        status = RevocationStatus.REVOKED if verdict.revoked else RevocationStatus.GOOD
        return Finding(
            cert_id, position, name, source, url, status, verdict.revoked_at, verdict.reason
        )
    return Finding(
        cert_id, position, name, source, urls[0], RevocationStatus.UNKNOWN, error="; ".join(errors)
    )


def _sticky(found: Finding, before: RevocationState | None) -> Finding:
    """A certificate found revoked before stays revoked while its source cannot tell."""
    if found.status != RevocationStatus.UNKNOWN or before is None:
        return found
    if before.status != RevocationStatus.REVOKED:
        return found
    return Finding(
        found.certificate_id, found.position, found.common_name, found.source, found.url,
        RevocationStatus.REVOKED, before.revoked_at, before.reason, found.error,
    )


# Whether a chain (by the SHA-256 of its PEM) names a revocation source; bounded.
_NAMES_A_SOURCE: dict[bytes, bool] = {}
_KNOWN_CHAINS = 100_000


def _names_a_source(chain_pem: str) -> bool:
    """Whether a certificate of the chain names a CRL distribution point or an OCSP
    responder (an unreadable chain is kept, so that `_parse` says why)."""
    digest = hashlib.sha256(chain_pem.encode()).digest()
    known = _NAMES_A_SOURCE.get(digest)
    if known is not None:
        return known
    try:
        chain = parse_chain(chain_pem)
    except CertificateError:
        return True
    named = any(revocation.crl_urls(c) or revocation.ocsp_urls(c) for c in chain)
    if len(_NAMES_A_SOURCE) >= _KNOWN_CHAINS:
        _NAMES_A_SOURCE.clear()
    _NAMES_A_SOURCE[digest] = named
    return named


def _parse(chains: Mapping[str, str]) -> dict[str, list[cx509.Certificate]]:
    parsed = {}
    for cert_id, pem in chains.items():
        try:
            parsed[cert_id] = parse_chain(pem)
        except CertificateError as exc:
            log.warning("revocation: certificate %s cannot be read: %s", cert_id, exc)
    return parsed


def check_chains(
    node: Node, chains: Mapping[str, str], now: dt.datetime, store: bool = True
) -> RevocationReport:
    """Check every certificate of each chain (certificate id → chain PEM) at `now`; `store`
    the findings (and newly fetched CRLs) in place of the previous ones. Chains that name
    no CRL or OCSP source anywhere are skipped (known once per chain: stored chains never
    change), so a scan of thousands of private-PKI certificates costs nothing here."""
    parsed = _parse({cid: pem for cid, pem in chains.items() if _names_a_source(pem)})
    crl_urls = {url for chain in parsed.values() for c in chain for url in revocation.crl_urls(c)}
    with transaction(node.engine) as session:
        roots = node.trusted_roots(session)
        before = {
            (row.certificate_id, row.position): row
            for row in session.exec(
                select(RevocationState).where(col(RevocationState.certificate_id).in_(parsed))
            )
        }
        cached = {
            row.url: row.der
            for row in session.exec(
                select(CrlCacheEntry).where(
                    col(CrlCacheEntry.url).in_(crl_urls), col(CrlCacheEntry.next_update) > now
                )
            )
        }
    report = RevocationReport()
    timeout = httpx.Timeout(node.config.scan.probe_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=3) as client:
        sources = _Sources(client, cached)
        for cert_id, chain in parsed.items():
            issuers = revocation.chain_issuers(chain, roots)
            found = [
                _sticky(finding, before.get((cert_id, position)))
                for position, cert in enumerate(chain)
                if not revocation.is_self_signed(cert)
                and (finding := _check(cert_id, position, cert, issuers[position], sources, now))
            ]
            if found:
                report.findings[cert_id] = found
    for warning in report.warnings:
        log.warning("revocation: %s", warning)
    if store:
        _store(node, list(parsed), report, sources.accepted, now)
    return report


def _store(
    node: Node,
    cert_ids: Collection[str],
    report: RevocationReport,
    fetched: Mapping[str, tuple[bytes, cx509.CertificateRevocationList]],
    now: dt.datetime,
) -> None:
    try:
        with transaction(node.engine) as session:
            session.exec(
                delete(RevocationState).where(col(RevocationState.certificate_id).in_(cert_ids))
            )
            session.add_all(f.as_row(now) for found in report.findings.values() for f in found)
            for url, (der, crl) in fetched.items():
                next_update = crl.next_update_utc
                if next_update is None:
                    continue
                session.merge(
                    CrlCacheEntry(
                        url=url,
                        der=der,
                        this_update=crl.last_update_utc,
                        next_update=next_update,
                        fetched_at=now,
                    )
                )
    except IntegrityError:
        log.info("another node stored revocation checks at the same moment; keeping those")


def check_in_use(
    node: Node, certificate_ids: Collection[str], now: dt.datetime, store: bool = True
) -> RevocationReport:
    """The scan step: check the chains of the certificates in use; when `store`, also forget
    the checks of certificates neither in use nor staged, and the CRLs past nextUpdate."""
    with transaction(node.engine) as session:
        chains = dict(
            session.exec(
                select(Certificate.id, Certificate.chain_pem).where(
                    col(Certificate.id).in_(certificate_ids)
                )
            ).all()
        )
    report = check_chains(node, chains, now, store)
    if store:
        with transaction(node.engine) as session:
            staged = select(StagedCertificate.certificate_id).where(
                StagedCertificate.status == StagedStatus.PENDING
            )
            session.exec(
                delete(RevocationState).where(
                    col(RevocationState.certificate_id).not_in(certificate_ids),
                    col(RevocationState.certificate_id).not_in(staged),
                )
            )
            session.exec(delete(CrlCacheEntry).where(col(CrlCacheEntry.next_update) <= now))
    return report
