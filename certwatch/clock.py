"""The one seam for wall-clock time: code that needs "now" asks here or takes it as an argument."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    """The current time, aware, in UTC (read on every call so freezegun reaches it)."""
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime | None) -> str | None:
    """`2026-11-27T00:00:00Z` for an aware datetime; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
