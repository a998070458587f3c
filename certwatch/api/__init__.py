"""The management API's actions: each resource module below registers its own, and this is
the whole list of them."""

from certwatch.api import (
    acme,
    balancers,
    certificates,
    listener_certificates,
    listeners,
    monitoring,
    policies,
    rotation,
)
from certwatch.api.registry import ACTIONS

MODULES = (
    acme, balancers, certificates, listener_certificates, listeners, monitoring, policies, rotation,
)

__all__ = ["ACTIONS", "MODULES"]
