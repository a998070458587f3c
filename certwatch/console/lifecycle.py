"""What the Staged and Requests pages work out from the actions' answers: when a staged
certificate rotates (SPEC §7), and the domain names typed into the request form."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from certwatch.clock import rfc3339
from certwatch.config import RotationConfig


def domain_names(text: str) -> list[str]:
    """The names of the `Domain names` field: one per line or comma separated."""
    return [name for name in re.split(r"[\s,]+", text) if name]


def rotates(
    entry: dict[str, Any],
    defaults: dict[str, str],
    rotation: RotationConfig,
    now: dt.datetime,
) -> str:
    """When the staged certificate `entry` (a ListStagedCertificates row) goes onto a listener,
    in words; `defaults` maps each listener id to its default certificate's NotAfter."""
    status = entry["Status"]
    if status == "Applied":
        return f"Rotated at {entry['UpdatedAt']}"
    if status != "Pending":
        return "Never (not a candidate)"
    if not rotation.auto:
        return "On Rotate Now (automatic rotation is off)"
    days = rotation.before_days
    listener = entry["ListenerId"]
    if listener is None:
        return f"When a default it covers has {days} days left, or on Rotate Now"
    not_after = defaults.get(listener)
    if not_after is None:
        return "On Rotate Now (the listener has no default certificate)"
    due = dt.datetime.fromisoformat(not_after) - dt.timedelta(days=days)
    if due <= now:
        return "At the next scan, or on Rotate Now"
    return f"From {rfc3339(due)} ({days} days before the default expires), or on Rotate Now"
