"""Watch `rotation.staging_dir`: a file dropped there is staged within seconds, not at the
next scan.

A thread waits on the folder with `watchfiles` (inotify, or polling where there is none).
Changes are gathered for `DEBOUNCE_MS`; then, since intake takes only files left unmodified
for `intake.SETTLE_SECONDS`, the thread waits that long and runs the intake hook — the same
one the scan runs — when this node leads. Files still being written change again and bring
another round. Only files added or modified in the folder itself count: intake moving files
to `processed/` and `rejected/` starts no round. `stop()` ends the thread within a step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, watch

from certwatch.node import Node
from certwatch.private_files import make_private_dirs
from certwatch.rotation.intake import SETTLE_SECONDS

log = logging.getLogger(__name__)
DEBOUNCE_MS = 1000
STEP_MS = 100
STOP_TIMEOUT = 10.0


class StagingWatcher:
    """Runs `hook(node)` (the intake) on the leader when files land in the staging folder."""

    def __init__(self, node: Node, hook: Callable[[Node], None]) -> None:
        self._node = node
        self._hook = hook
        self._directory = node.config.staging_dir
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _counts(self, change: Change, path: str) -> bool:
        """Whether a change starts a round: a file added or modified in the folder itself."""
        where = Path(path).absolute()
        return (
            change != Change.deleted
            and where.parent == self._directory
            and not where.name.startswith(".")
        )

    def start(self) -> StagingWatcher:
        """Create the folder (0700) if it is missing and start watching it."""
        make_private_dirs(self._directory)
        self._directory = self._directory.resolve()
        self._thread = threading.Thread(target=self._run, name="staging-watch", daemon=True)
        self._thread.start()
        log.info("watching %s for staged certificates", self._directory)
        return self

    def _run(self) -> None:
        try:
            self._watch()
        except OSError as exc:
            log.error(
                "watching %s stopped (%s); scans still read the folder",
                self._directory, exc.strerror or exc,
            )

    def _watch(self) -> None:
        for _changes in watch(
            self._directory,
            watch_filter=self._counts,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self._stop,
            recursive=False,
            raise_interrupt=False,
        ):
            if self._stop.wait(SETTLE_SECONDS):
                return
            if not self._node.is_leader():
                log.debug("staging folder changed; not the leader: left to the leading node")
                continue
            try:
                self._hook(self._node)
            except Exception:
                log.exception("staging intake after a change failed; the next scan retries")

    def stop(self) -> None:
        """Stop watching and wait for the thread (an intake running is let finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
