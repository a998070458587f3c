"""What an issued certificate becomes: a first issue enters the inventory as `Managed` (and
goes onto its listener, if the request names one); a renewal is staged (`Source` `acme`) and
rotated onto every listener that uses the certificate it renews."""

from __future__ import annotations

import logging

from sqlmodel import col, select

from certwatch.acme import alerts, requests
from certwatch.acme.orders import Issued
from certwatch.inventory.certificates import store_certificate
from certwatch.inventory.change import Change
from certwatch.inventory.listeners import associate, set_default
from certwatch.inventory.rows import get_certificate, get_listener
from certwatch.node import Node
from certwatch.rotation import rotate
from certwatch.rotation.staged import stage
from certwatch.store.db import transaction
from certwatch.store.models import CertificateRequest, ListenerCertificate, Role

log = logging.getLogger(__name__)
ACTOR = "acme"


def _enter(node: Node, change: Change, row: CertificateRequest, issued: Issued) -> str | None:
    """Record the certificate of `row` (and the end of its failure streak, if it had one); the
    staged id when it is a renewal."""
    alerts.record_recovery(change.session, row, change.now)
    if row.renews_certificate_id is None:
        roots = node.trusted_roots(change.session)
        name = row.certificate_name or row.domain_names[0]
        cert = store_certificate(
            change, node.keybox, roots, name, "Server", issued.chain_pem, issued.key_pem
        )
        cert.managed = True
        if row.listener_id is not None:
            listener = get_listener(change.session, row.listener_id)
            if row.role == Role.ADDITIONAL:
                associate(change, listener, [cert.id])
            else:
                set_default(change, listener, [cert.id])
        requests.issued(change.session, row, cert.id, change.now)
        return None
    entry = stage(node, change, issued.chain_pem, issued.key_pem, listener_id=None)
    entry.source = ACTOR
    cert = get_certificate(change.session, entry.certificate_id)
    cert.managed = True
    cert.name = get_certificate(change.session, row.renews_certificate_id).name
    requests.issued(change.session, row, cert.id, change.now)
    return entry.id


def deliver(node: Node, request_id: str, issued: Issued) -> None:
    """Put the certificate an order returned where its request says, through the pipeline;
    a renewal is then rotated in on each listener using the old certificate."""

    def work(change: Change) -> tuple[str | None, str | None]:
        row = change.session.get(CertificateRequest, request_id)
        if row is None:
            return None, None
        return _enter(node, change, row, issued), row.renews_certificate_id

    staged_id, old = node.changes.run(work, actor=ACTOR)
    if staged_id is None or old is None:
        return
    with transaction(node.engine) as session:
        users = session.exec(
            select(ListenerCertificate.listener_id).where(
                ListenerCertificate.certificate_id == old,
                col(ListenerCertificate.role).in_([Role.DEFAULT, Role.ADDITIONAL]),
            )
        ).all()
    for listener_id in sorted(set(users)):
        outcome = rotate.rotate(node, listener_id, staged_id, actor=ACTOR, replaced=old)
        log.info(
            "renewal %s on %s: %s %s", staged_id, listener_id, outcome.result, outcome.reason or "",
            extra={
                "staged_certificate_id": staged_id, "listener_id": listener_id,
                "certificate_id": old, "certificate_request_id": request_id,
            },
        )
