"""Staged certificates found revoked are `Rejected`, with the revocation as the reason.

`reject_revoked` is a scan hook, run by the leader before automatic rotation, so a revoked
candidate is never rotated in: it checks every `Pending` staged certificate's chain
(`scan.revocation`, the same check as the certificates in use) and rejects each one found
revoked. A source that cannot tell leaves the candidate `Pending` (a warning in the log).
"""

from __future__ import annotations

import logging

from sqlmodel import col, select

from certwatch import clock
from certwatch.node import Node
from certwatch.rotation.staged import revoked, set_status
from certwatch.scan.revocation import check_chains
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, StagedCertificate, StagedStatus

log = logging.getLogger(__name__)


def reject_revoked(node: Node) -> None:
    """Scan hook: check the revocation of every pending staged certificate; reject the revoked."""
    now = clock.now()
    with transaction(node.engine) as session:
        pending = session.exec(
            select(StagedCertificate.id, Certificate.id, Certificate.chain_pem)
            .join(Certificate, col(Certificate.id) == col(StagedCertificate.certificate_id))
            .where(StagedCertificate.status == StagedStatus.PENDING)
        ).all()
    if not pending:
        return
    report = check_chains(node, {cert_id: pem for _, cert_id, pem in pending}, now)
    found = report.revoked
    with transaction(node.engine) as session:
        for staged_id, cert_id, _ in pending:
            if cert_id not in found:
                continue
            row = session.get(StagedCertificate, staged_id)
            reason = revoked(session, cert_id)
            if row is None or row.status != StagedStatus.PENDING or reason is None:
                continue
            set_status(session, row, StagedStatus.REJECTED, reason, now)
            log.warning("staged certificate %s rejected: %s", staged_id, reason)
