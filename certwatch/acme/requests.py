"""Certificate requests in the store: the rules for placing one, and how each attempt ends.

A request is `Pending` until its first attempt; then `Issued` (with the certificate) or
`Failed` (with the reason and `next_attempt_at`, when it is tried again: every failure
doubles the wait, from one minute to six hours, jittered, never shorter).
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Sequence

from sqlmodel import Session, col, select

from certwatch import errors
from certwatch.config import AcmeConfig, KeyType
from certwatch.ids import new_id
from certwatch.inventory.change import Change
from certwatch.inventory.rows import get_certificate, get_listener
from certwatch.store.models import CertificateRequest, RequestStatus, Role

MAX_NAMES = 100
FIRST_RETRY = dt.timedelta(minutes=1)
LONGEST_RETRY = dt.timedelta(hours=6)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def dns_name(value: str) -> str:
    """`value` as a lower-case DNS name (a leading `*.` allowed); InvalidParameter otherwise."""
    name = value.strip().lower().rstrip(".")
    labels = name.removeprefix("*.").split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise errors.InvalidParameter(
            f"{value!r} is not a DNS name an ACME server issues for (e.g. www.example.com)"
        )
    return name


def check_names(config: AcmeConfig, names: Sequence[str]) -> list[str]:
    """The requested names, checked, normalised and without repeats; refused when ACME is off,
    when there are none or too many, or when the configured challenge cannot prove one."""
    if not config.enabled:
        raise errors.AcmeNotConfigured(
            "no ACME server is configured: set acme.directory_url to request certificates"
        )
    unique = list(dict.fromkeys(dns_name(name) for name in names))
    if not 1 <= len(unique) <= MAX_NAMES:
        raise errors.InvalidParameter(
            f"DomainNames takes 1 to {MAX_NAMES} names; got {len(unique)}"
        )
    wildcards = [name for name in unique if name.startswith("*.")]
    if wildcards and config.challenge != "dns-01":
        raise errors.UnsupportedChallenge(
            f"wildcard names ({', '.join(wildcards)}) need dns-01; acme.challenge is "
            f"{config.challenge}"
        )
    if config.challenge == "dns-01" and not config.dns_hook:
        raise errors.UnsupportedChallenge("dns-01 needs acme.dns_hook, which is not set")
    return unique


def place(
    change: Change,
    config: AcmeConfig,
    names: Sequence[str],
    *,
    certificate_name: str | None = None,
    key_type: KeyType | None = None,
    listener_id: str | None = None,
    role: Role = Role.DEFAULT,
    renews: str | None = None,
) -> CertificateRequest:
    """A new `Pending` request, due at once, after the rules of `check_names`."""
    checked = check_names(config, names)
    if listener_id is not None:
        get_listener(change.session, listener_id)
    row = CertificateRequest(
        id=new_id("crq"),
        domain_names=checked,
        certificate_name=certificate_name,
        key_type=key_type or config.key_type,
        listener_id=listener_id,
        role=role,
        renews_certificate_id=renews,
        status=RequestStatus.PENDING,
        next_attempt_at=change.now,
        created_at=change.now,
        updated_at=change.now,
    )
    change.session.add(row)
    return row


def renew(change: Change, config: AcmeConfig, certificate_id: str) -> CertificateRequest:
    """A renewal of a managed certificate, due at once: its open renewal brought forward, or a
    new request for the same names."""
    cert = get_certificate(change.session, certificate_id)
    if not cert.managed:
        raise errors.InvalidParameter(
            f"certificate {cert.id} is not managed by certwatch (not issued through ACME)"
        )
    open_one = change.session.exec(
        select(CertificateRequest).where(
            CertificateRequest.renews_certificate_id == cert.id,
            col(CertificateRequest.status).in_([RequestStatus.PENDING, RequestStatus.FAILED]),
        )
    ).first()
    if open_one is not None:
        open_one.next_attempt_at = change.now
        change.session.add(open_one)
        return open_one
    names = list(cert.sans) or [cert.common_name]
    return place(change, config, names, certificate_name=cert.name, renews=cert.id)


def due(session: Session, now: dt.datetime) -> list[CertificateRequest]:
    """Requests whose next attempt is due, oldest first."""
    return list(
        session.exec(
            select(CertificateRequest)
            .where(
                col(CertificateRequest.status).in_([RequestStatus.PENDING, RequestStatus.FAILED]),
                CertificateRequest.next_attempt_at <= now,
            )
            .order_by(col(CertificateRequest.next_attempt_at), col(CertificateRequest.id))
        ).all()
    )


def retry_delay(failures: int, jitter: float) -> dt.timedelta:
    """How long to wait after `failures` failures in a row; `jitter` in [0, 1) adds up to a
    fifth more (never less than the plain doubling, never more than the cap)."""
    plain = FIRST_RETRY * 2 ** min(max(failures - 1, 0), 20)
    return min(plain * (1 + jitter / 5), LONGEST_RETRY)


def issued(
    session: Session, row: CertificateRequest, certificate_id: str, now: dt.datetime
) -> None:
    """The request got its certificate."""
    row.status, row.reason, row.certificate_id = RequestStatus.ISSUED, None, certificate_id
    row.failures, row.updated_at = 0, now
    session.add(row)


def failed(session: Session, row: CertificateRequest, reason: str, now: dt.datetime) -> None:
    """The attempt failed: keep the reason and when the next one is due."""
    row.failures += 1
    row.status, row.reason, row.updated_at = RequestStatus.FAILED, reason, now
    row.next_attempt_at = now + retry_delay(row.failures, random.random())
    session.add(row)
