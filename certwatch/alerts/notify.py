"""The apprise adapter: send one message to every alert URL and say, per URL, if it arrived.

apprise's `notify()` answers True, False or None (newer versions an `AppriseResult` whose
truth is the same): only True counts as delivered; None (nothing was sent) is a failure.
With no URL configured, messages go to the log and count as delivered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import apprise

log = logging.getLogger(__name__)


def url_key(url: str) -> str:
    """A digest naming an alert URL in the store without its secrets."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Delivery:
    """The outcome for one URL (shown with its secrets masked; `key` is `url_key`)."""

    url: str
    delivered: bool
    error: str | None = None
    key: str = ""


def _masked_invalid(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep else "(unreadable URL)"


def _send_one(url: str, title: str, body: str, notify_type: str) -> Delivery:
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return Delivery(_masked_invalid(url), False, "not a valid apprise URL", url_key(url))
    masked = str(plugin.url(privacy=True))
    target = apprise.Apprise()
    target.add(plugin)
    with apprise.LogCapture(level=logging.WARNING) as captured:
        result = target.notify(body=body, title=title, notify_type=notify_type)
    if result is not None and bool(result):
        return Delivery(masked, True, key=url_key(url))
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    reason = lines[-1].split(" - ", 2)[-1] if lines else "apprise sent nothing"
    return Delivery(masked, False, reason, url_key(url))


class Notifier:
    """Delivers titles and bodies to the configured apprise URLs."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = tuple(urls)
        self.keys = frozenset(url_key(url) for url in self.urls)

    def send_each(
        self,
        title: str,
        body: str,
        notify_type: str = "warning",
        skip: Collection[str] = (),
    ) -> list[Delivery]:
        """Send to every URL separately, except those whose key is in `skip`; one result each."""
        return [
            _send_one(url, title, body, notify_type)
            for url in self.urls
            if url_key(url) not in skip
        ]

    def send(self, title: str, body: str) -> Delivery:
        """Send a warning to every URL; delivered only when every URL took it. No URL: log it."""
        if not self.urls:
            log.warning("ALERT %s\n%s", title, body)
            return Delivery("log", True)
        results = self.send_each(title, body)
        error = failures(results)
        return Delivery(", ".join(r.url for r in results), not error, error or None)


def failures(results: Sequence[Delivery]) -> str:
    """The URLs that did not take a message, each with its error ("" when all did)."""
    return "; ".join(f"{r.url}: {r.error}" for r in results if not r.delivered)
