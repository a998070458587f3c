"""The scan schedule (APScheduler 3.x, kept inside this module).

One interval job: a scan at start and every `scan.interval`; never two at once
(`max_instances=1`), and runs missed while busy or asleep collapse into one (`coalesce`).
The job calls `scheduled_scan`, which tests call directly.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.background import BackgroundScheduler

from certwatch import clock
from certwatch.app.service import Service
from certwatch.scan.run import ScanReport

log = logging.getLogger(__name__)


def scheduled_scan(service: Service) -> ScanReport | None:
    """The job: scan when this node is the leader; log (never raise) a failure."""
    if not service.is_leader():
        log.debug("not the leader: no scan on this node")
        return None
    try:
        report = service.scanner.run()
    except Exception:
        log.exception("scan failed; the next one runs in %gs", service.config.scan.interval)
        return None
    log.info("scan %s: %s", report.scan_id, report.counts(), extra={"scan_id": report.scan_id})
    return report


class ScanScheduler:
    """Runs `scheduled_scan` at start and every `scan.interval` on a background thread."""

    def __init__(self, service: Service) -> None:
        self._scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._scheduler.add_job(
            scheduled_scan,
            "interval",
            args=[service],
            seconds=service.config.scan.interval,
            next_run_time=clock.now(),
            id="scan",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def start(self) -> None:
        """Start the schedule (the first scan runs at once)."""
        self._scheduler.start()

    def run_now(self) -> None:
        """Bring the next scan forward to now (e.g. when this node has just become leader)."""
        if self._scheduler.running:
            self._scheduler.modify_job("scan", next_run_time=clock.now())

    def stop(self) -> None:
        """Stop scheduling and wait for a running scan to finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    @property
    def next_run(self) -> dt.datetime | None:
        """When the next scan is due (None when stopped)."""
        job = self._scheduler.get_job("scan")
        return job.next_run_time if job else None


def start_scheduler(service: Service) -> ScanScheduler:
    """A started scan schedule for `service`."""
    scheduler = ScanScheduler(service)
    scheduler.start()
    return scheduler
