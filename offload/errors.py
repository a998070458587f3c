"""Exceptions raised by the data plane's control API.

Hierarchy::

    OffloadError                 anything the proxy control reports
    ├── ApplyError               a worker could not apply a listener (bind, key, CA, policy)
    ├── ApplyTimeout             a worker did not acknowledge in time (also a TimeoutError)
    └── WorkerExited             a worker process died while starting or answering
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """Why one listener could not be applied: `reason` in words, the OS `errno` if any."""

    reason: str
    errno: int | None = None


class OffloadError(Exception):
    """Base class of every error `offload.workers.ProxyControl` raises."""


class ApplyError(OffloadError):
    """A listener of the snapshot could not be applied; everything else was.

    `failures` maps each failed listener id to its reason (`address:port: reason`) and
    `errnos` to the OS error number where there is one; `listener_id` is the first one, for
    callers that handle one listener at a time.
    """

    def __init__(self, failures: dict[str, Failure]) -> None:
        self.failures = {lid: f.reason for lid, f in failures.items()}
        self.errnos = {lid: f.errno for lid, f in failures.items() if f.errno is not None}
        self.listener_id = next(iter(self.failures))
        super().__init__(
            "; ".join(f"listener {lid} on {reason}" for lid, reason in self.failures.items())
        )


class ApplyTimeout(OffloadError, TimeoutError):
    """A worker did not acknowledge a request within the acknowledgement timeout."""


class WorkerExited(OffloadError):
    """A worker process exited (or its pipe broke) while it was being started or asked."""
