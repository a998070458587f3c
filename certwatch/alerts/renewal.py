"""A staged renewal ready for a certificate in use, as alerts name it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlmodel import Session

from certwatch.store.models import Certificate, Listener


@dataclass(frozen=True)
class StagedRenewal:
    """The staged certificate that would replace one in use, and when it will rotate."""

    staged_certificate_id: str
    certificate_id: str
    not_after: dt.datetime
    rotates_at: dt.datetime | None


class RenewalLookup(Protocol):
    """Finds the staged renewal for a certificate a listener uses (None when there is none)."""

    def __call__(
        self, session: Session, certificate: Certificate, listener: Listener, now: dt.datetime
    ) -> StagedRenewal | None:
        """The best pending candidate, if any."""
