"""One row by id, or the SPEC's 404 `<Object>NotFound`: the shape every lookup shares."""

from __future__ import annotations

from typing import TypeVar

from sqlmodel import Session, SQLModel

from certwatch import errors
from certwatch.store.models import (
    Certificate,
    Listener,
    LoadBalancer,
    RotationEvent,
    ServerGroup,
    StagedCertificate,
)

M = TypeVar("M", bound=SQLModel)


def fetch(session: Session, model: type[M], kind: str, object_id: str) -> M:
    """The `model` row with this id, or `errors.NotFound(kind, object_id)`."""
    row = session.get(model, object_id)
    if row is None:
        raise errors.NotFound(kind, object_id)
    return row


def get_certificate(session: Session, certificate_id: str) -> Certificate:
    """The certificate with this id, or 404 CertificateNotFound."""
    return fetch(session, Certificate, "Certificate", certificate_id)


def get_listener(session: Session, listener_id: str) -> Listener:
    """The listener with this id, or 404 ListenerNotFound."""
    return fetch(session, Listener, "Listener", listener_id)


def get_load_balancer(session: Session, load_balancer_id: str) -> LoadBalancer:
    """The load balancer with this id, or 404 LoadBalancerNotFound."""
    return fetch(session, LoadBalancer, "LoadBalancer", load_balancer_id)


def get_server_group(session: Session, server_group_id: str) -> ServerGroup:
    """The server group with this id, or 404 ServerGroupNotFound."""
    return fetch(session, ServerGroup, "ServerGroup", server_group_id)


def get_staged(session: Session, staged_id: str) -> StagedCertificate:
    """The staged certificate with this id, or 404 StagedCertificateNotFound."""
    return fetch(session, StagedCertificate, "StagedCertificate", staged_id)


def get_rotation_event(session: Session, event_id: str) -> RotationEvent:
    """The rotation event with this id, or 404 RotationEventNotFound."""
    return fetch(session, RotationEvent, "RotationEvent", event_id)
