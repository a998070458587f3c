"""The API actions; importing this package registers all of them in `ACTIONS`."""

from certwatch.actions import balancers, certificates, listeners, policies
from certwatch.actions.registry import ACTIONS

__all__ = ["ACTIONS", "balancers", "certificates", "listeners", "policies"]
