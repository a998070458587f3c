"""`Change`: one change in progress, as every rule of the inventory receives it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session


@dataclass
class Change:
    """The open transaction of one change, its time, and who makes it.

    `record_history` False: the caller (a rotation) records the change in its own history
    entry. `discard` True: the work changed nothing worth keeping (a dry run, a replayed
    `ClientToken`), so the transaction is rolled back and the proxy is left alone.
    """

    session: Session
    now: dt.datetime
    actor: str = "api"
    dry_run: bool = False
    record_history: bool = True
    discard: bool = False
