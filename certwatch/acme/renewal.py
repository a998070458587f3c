"""When a managed certificate is renewed: at the time picked in the renewal window its ACME
server suggests (RFC 9773 renewal information, where the directory offers `renewalInfo`),
else with one third of its lifetime left, or at `rotation.before_days` before expiry if that
comes first. `renew_due` is the scan hook that asks the server for windows that are due to be
asked again (after its Retry-After) and places the renewals that are due (one open renewal
per certificate); `renewal_times` is what the metric exports."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from functools import partial

from cryptography import x509
from sqlmodel import Session, col, select

from certwatch import clock
from certwatch.acme import account, ari, requests
from certwatch.acme.orders import ORDER_FAULTS
from certwatch.inventory.change import Change
from certwatch.node import Node
from certwatch.store.db import transaction
from certwatch.store.models import (
    AcmeRenewalInfo,
    Certificate,
    CertificateRequest,
    ListenerCertificate,
)

log = logging.getLogger(__name__)
ARI_FAULTS: tuple[type[Exception], ...] = (*ORDER_FAULTS, ValueError)
"""What asking for one certificate's renewal information may fail with (then it is skipped)."""


def renew_at(not_before: dt.datetime, not_after: dt.datetime, before_days: int) -> dt.datetime:
    """When a certificate valid from `not_before` to `not_after` is due for renewal."""
    third_left = not_after - (not_after - not_before) / 3
    return min(third_left, not_after - dt.timedelta(days=before_days))


def _renew(node: Node, certificate_id: str, change: Change) -> CertificateRequest:
    return requests.renew(change, node.config.acme, certificate_id)


def _not_renewed(session: Session) -> list[Certificate]:
    """Managed certificates with no renewal placed (open or done)."""
    renewed = select(CertificateRequest.renews_certificate_id).where(
        col(CertificateRequest.renews_certificate_id).is_not(None)
    )
    return list(
        session.exec(
            select(Certificate).where(
                Certificate.managed == True,  # noqa: E712 (SQL, not Python)
                col(Certificate.id).not_in(renewed),
            )
        ).all()
    )


def _store_window(node: Node, certificate_id: str, window: ari.Window, now: dt.datetime) -> None:
    with transaction(node.engine) as session:
        row = session.get(AcmeRenewalInfo, certificate_id) or AcmeRenewalInfo(
            certificate_id=certificate_id
        )
        row.window_start, row.window_end = window.start, window.end
        row.renew_at, row.next_check_at, row.updated_at = (
            window.renew_at, window.next_check_at, now,
        )
        session.add(row)


def _ask_server(node: Node, certs: Sequence[Certificate], now: dt.datetime) -> None:
    """Refresh the renewal windows of `certs` whose Retry-After has passed (not expired ones:
    RFC 9773 forbids asking about those)."""
    with transaction(node.engine) as session:
        fresh = {
            row.certificate_id
            for row in session.exec(
                select(AcmeRenewalInfo).where(
                    col(AcmeRenewalInfo.certificate_id).in_([c.id for c in certs]),
                    AcmeRenewalInfo.next_check_at > now,
                )
            )
        }
    stale = [c for c in certs if c.id not in fresh and c.not_after > now]
    if not stale:
        return
    try:
        acme, _ = account.connect(node)
    except ORDER_FAULTS as exc:
        log.warning("renewal information not asked: the ACME server is unreachable: %s", exc)
        return
    if not ari.supported(acme):
        return
    for cert in stale:
        try:
            window = ari.fetch(acme, x509.load_pem_x509_certificate(cert.chain_pem.encode()), now)
        except ARI_FAULTS as exc:
            log.warning(
                "renewal information of %s: %s", cert.id, exc, extra={"certificate_id": cert.id}
            )
            continue
        _store_window(node, cert.id, window, now)


def due_times(
    session: Session, certs: Sequence[Certificate], before_days: int
) -> dict[str, dt.datetime]:
    """Per certificate, when it is renewed: the time picked in its ARI window, else renew_at."""
    picked = {
        row.certificate_id: row.renew_at
        for row in session.exec(
            select(AcmeRenewalInfo).where(
                col(AcmeRenewalInfo.certificate_id).in_([c.id for c in certs])
            )
        )
    }
    return {
        c.id: picked.get(c.id) or renew_at(c.not_before, c.not_after, before_days) for c in certs
    }


def renew_due(node: Node) -> None:
    """Scan hook: place a renewal for every managed certificate that is due and not renewed
    (nor being renewed) yet, after refreshing the server's renewal windows that are stale."""
    if not node.config.acme.enabled:
        return
    now = clock.now()
    with transaction(node.engine) as session:
        managed = _not_renewed(session)
    if not managed:
        return
    _ask_server(node, managed, now)
    with transaction(node.engine) as session:
        due = due_times(session, managed, node.config.rotation.before_days)
    for cert in managed:
        if due[cert.id] > now:
            continue
        row = node.changes.run(partial(_renew, node, cert.id), actor="acme")
        log.info(
            "renewal of %s (%s) placed as %s", cert.id, cert.common_name, row.id,
            extra={"certificate_id": cert.id, "certificate_request_id": row.id},
        )


def renewal_times(before_days: int, session: Session) -> list[tuple[str, dt.datetime]]:
    """(certificate id, when its renewal is due) for every managed certificate a listener uses:
    the start of the window its ACME server suggested when known, else `renew_at`."""
    in_use = select(ListenerCertificate.certificate_id)
    rows = session.exec(
        select(Certificate, AcmeRenewalInfo)
        .join(
            AcmeRenewalInfo,
            col(AcmeRenewalInfo.certificate_id) == col(Certificate.id),
            isouter=True,
        )
        .where(Certificate.managed == True, col(Certificate.id).in_(in_use))  # noqa: E712
        .order_by(col(Certificate.id))
    ).all()
    return [
        (
            cert.id,
            info.window_start
            if info is not None
            else renew_at(cert.not_before, cert.not_after, before_days),
        )
        for cert, info in rows
    ]
