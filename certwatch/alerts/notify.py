"""The apprise adapter: send one message to every alert URL and say, per URL, if it arrived.

Each URL is notified through its own apprise plugin instance, and whether it arrived is the
`AppriseResult` apprise returns for that one service (apprise >= 2.3): only SUCCESS counts;
FAILURE, TIMEOUT or NOMATCH (nothing was sent) is a failure. The error text of a failure is the
last warning apprise captured for that service's last attempt (no log scraping).

A URL that fails is retried at once, by apprise's own per-service retry: up to `ATTEMPTS`
attempts, `RETRY_WAIT` seconds apart, all within `URL_TIMEOUT` seconds (apprise's call
timeout). apprise's retry re-sends only what the endpoint did not accept (a multi-target URL
or a message split in pieces does not repeat the parts that arrived). A URL that sets its own
`retry=` / `wait=` keeps them. URLs that took a message are not retried (see
`delivery.deliver`).

With no URL configured, messages go to the log and count as delivered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import apprise

log = logging.getLogger(__name__)

# apprise notify types (apprise.NotifyType values).
INFO = "info"
WARNING = "warning"
FAILURE = "failure"

ATTEMPTS = 3
RETRY_WAIT = 0.5
URL_TIMEOUT = 10.0


def url_key(url: str) -> str:
    """A digest naming an alert URL in the store without its secrets."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Delivery:
    """The outcome for one URL (shown with its secrets masked; `key` is `url_key`).

    `attempts` counts the sends apprise actually made (0 when none could start).
    """

    url: str
    delivered: bool
    error: str | None = None
    key: str = ""
    attempts: int = 1


@dataclass(frozen=True)
class RetryPolicy:
    """How often apprise tries one URL within one delivery, and for how long at most."""

    attempts: int = ATTEMPTS
    wait: float = RETRY_WAIT
    timeout: float = URL_TIMEOUT


def _masked_invalid(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep else "(unreadable URL)"


def _sets_own_retry(url: str) -> tuple[bool, bool]:
    """Whether the URL names apprise's `retry=` and `wait=` parameters itself."""
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return False, False
    return "retry" in query, "wait" in query


def _error_text(result: apprise.AppriseResult, attempts: int) -> str:
    """The last warning apprise captured for the service's last attempt, else its status."""
    for service in result:
        for attempt in reversed(service.attempts):
            lines = [e.message for e in attempt.logs if e.level in ("WARNING", "ERROR")]
            if lines:
                return str(lines[-1])
        if service.status == apprise.AppriseResultStatus.TIMEOUT:
            return f"timed out after {attempts} attempt(s)"
        return f"apprise reported {service.status.name}"
    lines = [e.message for e in result.call_logs() if e.level in ("WARNING", "ERROR")]
    return str(lines[-1]) if lines else "apprise sent nothing"


def _attempts_made(result: apprise.AppriseResult) -> int:
    """Sends apprise began (a zero-second TIMEOUT is an attempt the deadline prevented)."""
    return sum(
        1
        for service in result
        for attempt in service.attempts
        if attempt.status != apprise.AppriseResultStatus.TIMEOUT or attempt.elapsed > 0
    )


def _send_one(
    url: str, title: str, body: str, notify_type: str, policy: RetryPolicy
) -> Delivery:
    key = url_key(url)
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return Delivery(_masked_invalid(url), False, "not a valid apprise URL", key, 0)
    masked = str(plugin.url(privacy=True))
    own_retry, own_wait = _sets_own_retry(url)
    if not own_retry:
        plugin.retry = max(policy.attempts - 1, 0)
    if not own_wait:
        plugin.wait = policy.wait
    target = apprise.Apprise()
    target.add(plugin)
    try:
        result = target.notify(
            body=body, title=title, notify_type=notify_type, timeout=policy.timeout
        )
    except Exception as exc:  # a plugin or apprise itself failing must not end the delivery
        log.exception("apprise raised while notifying %s", masked)
        return Delivery(masked, False, f"apprise raised {type(exc).__name__}: {exc}", key)
    attempts = _attempts_made(result)
    if result.status == apprise.AppriseResultStatus.SUCCESS:
        return Delivery(masked, True, key=key, attempts=attempts)
    return Delivery(masked, False, _error_text(result, attempts), key, attempts)


class Notifier:
    """Delivers titles and bodies to the configured apprise URLs."""

    def __init__(self, urls: Sequence[str], policy: RetryPolicy | None = None) -> None:
        self.urls = tuple(urls)
        self.keys = frozenset(url_key(url) for url in self.urls)
        self.policy = policy or RetryPolicy()

    def send_each(
        self,
        title: str,
        body: str,
        notify_type: str = WARNING,
        skip: Collection[str] = (),
    ) -> list[Delivery]:
        """Send to every URL separately (retrying each that fails), except those whose key is
        in `skip`; one result each."""
        return [
            _send_one(url, title, body, notify_type, self.policy)
            for url in self.urls
            if url_key(url) not in skip
        ]

    def send(self, title: str, body: str, notify_type: str = WARNING) -> Delivery:
        """Send to every URL; delivered only when every URL took it. No URL: log it."""
        if not self.urls:
            log.warning("ALERT %s\n%s", title, body)
            return Delivery("log", True)
        results = self.send_each(title, body, notify_type)
        error = failures(results)
        return Delivery(
            ", ".join(r.url for r in results),
            not error,
            error or None,
            attempts=max((r.attempts for r in results), default=0),
        )


def failures(results: Sequence[Delivery]) -> str:
    """The URLs that did not take a message, each with its error ("" when all did)."""
    return "; ".join(f"{r.url}: {r.error}" for r in results if not r.delivered)
