"""When a managed certificate is renewed: with one third of its lifetime left, or at
`rotation.before_days` before expiry if that comes first; `renew_due` is the scan hook that
places the renewals that are due (one open renewal per certificate)."""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial

from sqlmodel import col, select

from certwatch import clock
from certwatch.acme import requests
from certwatch.inventory.change import Change
from certwatch.node import Node
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, CertificateRequest

log = logging.getLogger(__name__)


def renew_at(not_before: dt.datetime, not_after: dt.datetime, before_days: int) -> dt.datetime:
    """When a certificate valid from `not_before` to `not_after` is due for renewal."""
    third_left = not_after - (not_after - not_before) / 3
    return min(third_left, not_after - dt.timedelta(days=before_days))


def _renew(node: Node, certificate_id: str, change: Change) -> CertificateRequest:
    return requests.renew(change, node.config.acme, certificate_id)


def renew_due(node: Node) -> None:
    """Scan hook: place a renewal for every managed certificate that is due and not renewed
    (nor being renewed) yet."""
    if not node.config.acme.enabled:
        return
    now = clock.now()
    with transaction(node.engine) as session:
        renewed = select(CertificateRequest.renews_certificate_id).where(
            col(CertificateRequest.renews_certificate_id).is_not(None)
        )
        managed = session.exec(
            select(Certificate).where(
                Certificate.managed == True,  # noqa: E712 (SQL, not Python)
                col(Certificate.id).not_in(renewed),
            )
        ).all()
    before_days = node.config.rotation.before_days
    for cert in managed:
        if renew_at(cert.not_before, cert.not_after, before_days) > now:
            continue
        row = node.changes.run(partial(_renew, node, cert.id), actor="acme")
        log.info("renewal of %s (%s) placed as %s", cert.id, cert.common_name, row.id)
