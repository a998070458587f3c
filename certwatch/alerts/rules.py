"""Expiry alerts: which are due (pure functions of what is in use, what was sent, and `now`).

Rules (SPEC §5):

- A certificate's *effective* expiry is the earliest NotAfter of the leaf and of every
  certificate of its uploaded chain: an intermediate that expires first is what alerts. The
  alert is still keyed by the leaf's certificate id; its title and body name the intermediate.
- Thresholds: a certificate used by several listeners alerts at the UNION of their thresholds
  (each listener's `AlertThresholdsDays`, else `alerts.thresholds_days`).
- A threshold of `d` days is reached when the time left is at or below `d` days (UTC,
  fractions count: 7 d 0 h 0 m 1 s left is not yet "7"); at or below zero it is `expired`.
- Per certificate, only the most urgent threshold reached is alerted, once: a new alert is
  created unless an alert at that threshold, or a more urgent one, exists already (sent or
  not). After downtime across 30 and 7, only 7 is sent.
- Pending (undelivered) alerts are retried until delivered, except those that are dropped:
  pending alerts of a certificate no longer in use (replacing a certificate ends its alerts),
  pending alerts less urgent than another alert of the same certificate, and pending alerts
  whose threshold is no longer reached (thresholds changed). Dropped alerts are deleted;
  delivered alerts stay as the record.
- Revocation is apart from expiry: a certificate in use found revoked (the leaf or a
  certificate of its chain) alerts once as `revoked`, whatever its expiry alerts; it is
  retried until delivered like them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from certwatch.clock import rfc3339
from certwatch.pki.x509 import days_remaining

EXPIRED = "expired"
REVOKED = "revoked"
TARGET = "target"
"""The role of a use by an external scan target (`Usage.listener_id` is then its address)."""
RENEWAL_FAILING = "renewal-failing"
RENEWAL_RECOVERED = "renewal-recovered"
ACME_KINDS = (RENEWAL_FAILING, RENEWAL_RECOVERED)
"""The `threshold`s of ACME failure-streak alerts (`acme/alerts.py`), keyed by request id: the
expiry plan here neither sends nor drops them."""
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Usage:
    """One listener using a certificate in one role, with that listener's thresholds; or an
    external scan target serving it (role `target`, `listener_id` its HOST:PORT)."""

    listener_id: str
    listener_port: int
    role: str
    thresholds: tuple[int, ...]


@dataclass(frozen=True)
class ChainLink:
    """A certificate above the leaf in its uploaded chain (position 1 = first intermediate)."""

    position: int
    common_name: str
    not_after: dt.datetime


@dataclass(frozen=True)
class Revocation:
    """A certificate of a chain in use found revoked (position 0 = the leaf itself)."""

    position: int
    common_name: str
    source: str
    url: str
    revoked_at: dt.datetime | None
    reason: str | None


@dataclass(frozen=True)
class CertInUse:
    """A certificate some listener uses, with its chain and every use."""

    certificate_id: str
    common_name: str
    sans: tuple[str, ...]
    not_after: dt.datetime
    usages: tuple[Usage, ...]
    chain: tuple[ChainLink, ...] = ()
    revocation: Revocation | None = None

    @property
    def expiring_link(self) -> ChainLink | None:
        """The chain certificate that expires before the leaf (the earliest), if any."""
        earliest = min(self.chain, key=lambda link: link.not_after, default=None)
        return earliest if earliest and earliest.not_after < self.not_after else None

    @property
    def effective_not_after(self) -> dt.datetime:
        """When the served chain stops being valid: the earliest NotAfter in it."""
        link = self.expiring_link
        return link.not_after if link else self.not_after

    @property
    def thresholds(self) -> tuple[int, ...]:
        """The union of every using listener's thresholds, largest first."""
        return tuple(sorted({d for u in self.usages for d in u.thresholds}, reverse=True))


@dataclass(frozen=True)
class AlertRecord:
    """An alert already in the store."""

    alert_id: str
    certificate_id: str
    threshold: str
    delivered: bool


@dataclass(frozen=True)
class Due:
    """An alert to deliver now: new (`alert_id` None) or a pending one retried."""

    cert: CertInUse
    threshold: str
    alert_id: str | None = None


@dataclass(frozen=True)
class Plan:
    """What a scan does about alerts: deliver `send`, delete the pending alerts in `drop`."""

    send: tuple[Due, ...]
    drop: tuple[str, ...]


def target_certificate_id(fingerprint: str) -> str:
    """The id of a certificate only an external scan target serves: `srv-<16 hex>` of its
    SHA-256 fingerprint (alerts and metrics name it so)."""
    return f"srv-{fingerprint[:16]}"


def urgency(threshold: str) -> int:
    """Sort key: smaller is more urgent (`expired` first, then fewer days)."""
    return -1 if threshold == EXPIRED else int(threshold)


def notify_type(threshold: str) -> str:
    """The apprise notify type of an alert at `threshold`: `failure` when revoked, expired or
    1 day or less is left, `warning` for 2 to 7 days, `info` for more (the 30-day alert)."""
    if threshold == REVOKED:
        return "failure"
    days = urgency(threshold)
    if days <= 1:
        return "failure"
    return "warning" if days <= 7 else "info"


def reached(cert: CertInUse, now: dt.datetime) -> str | None:
    """The most urgent threshold the certificate has reached at `now`, or None."""
    left = cert.effective_not_after - now
    if left <= dt.timedelta(0):
        return EXPIRED
    hit = [d for d in cert.thresholds if left <= d * _DAY]
    return str(min(hit)) if hit else None


def _expiry_due(
    cert: CertInUse, records: Sequence[AlertRecord], now: dt.datetime
) -> Due | None:
    """The expiry alert to send for `cert` (new, or the pending one retried), or None."""
    level = reached(cert, now)
    if level is None:
        return None
    covering = [r for r in records if urgency(r.threshold) <= urgency(level)]
    if not covering:
        return Due(cert, level)
    best = min(covering, key=lambda r: urgency(r.threshold))
    return None if best.delivered else Due(cert, best.threshold, best.alert_id)


def _revocation_due(cert: CertInUse, record: AlertRecord | None) -> Due | None:
    """The revocation alert to send for `cert` (new, or the pending one retried), or None."""
    if cert.revocation is None:
        return None
    if record is None:
        return Due(cert, REVOKED)
    return None if record.delivered else Due(cert, REVOKED, record.alert_id)


def plan_alerts(
    in_use: Iterable[CertInUse], existing: Iterable[AlertRecord], now: dt.datetime
) -> Plan:
    """Decide which alerts to send (new or retried) and which pending ones to drop."""
    by_cert: dict[str, list[AlertRecord]] = {}
    for record in existing:
        by_cert.setdefault(record.certificate_id, []).append(record)
    send: list[Due] = []
    for cert in in_use:
        records = by_cert.get(cert.certificate_id, [])
        expiry = [r for r in records if r.threshold != REVOKED]
        revoked = next((r for r in records if r.threshold == REVOKED), None)
        send.extend(
            due
            for due in (_expiry_due(cert, expiry, now), _revocation_due(cert, revoked))
            if due is not None
        )
    keep = {due.alert_id for due in send if due.alert_id is not None}
    drop = [
        r.alert_id
        for records in by_cert.values()
        for r in records
        if not r.delivered and r.alert_id not in keep
    ]
    return Plan(tuple(send), tuple(sorted(drop)))


def title(cert: CertInUse, threshold: str) -> str:
    """`<common name> expires within 7 days` / `within 1 day` / `has expired` /
    `has been revoked`."""
    name = cert.common_name or cert.certificate_id
    if threshold == REVOKED:
        revoked = cert.revocation
        if revoked is not None and revoked.position > 0:
            return f"{name} has been revoked (chain: intermediate {revoked.common_name})"
        return f"{name} has been revoked"
    if threshold == EXPIRED:
        text = f"{name} has expired"
    else:
        days = int(threshold)
        text = f"{name} expires within {days} day{'s' if days != 1 else ''}"
    link = cert.expiring_link
    return f"{text} (chain: intermediate {link.common_name})" if link else text


def body(cert: CertInUse, threshold: str, now: dt.datetime, renewals: Mapping[str, str]) -> str:
    """The alert text: listeners, ports, id, names, roles, NotAfter, days left, renewal."""
    lines = [
        f"Certificate {cert.certificate_id} ({cert.common_name})",
        f"SANs: {', '.join(cert.sans) or '(none)'}",
        f"NotAfter: {rfc3339(cert.not_after)}",
    ]
    revoked = cert.revocation
    if threshold == REVOKED and revoked is not None:
        which = (
            "the certificate itself"
            if revoked.position == 0
            else f"intermediate {revoked.common_name} (chain position {revoked.position})"
        )
        lines += [
            f"Revoked: {which}",
            f"Revocation time: {rfc3339(revoked.revoked_at) if revoked.revoked_at else 'unknown'}",
            f"Revocation reason: {revoked.reason or 'unspecified'}",
            f"Checked with: {revoked.source.upper()} {revoked.url}",
        ]
    link = cert.expiring_link
    if link is not None:
        lines.append(
            f"Expires first: intermediate {link.common_name} (chain position {link.position}), "
            f"NotAfter {rfc3339(link.not_after)}, before the leaf"
        )
    left = days_remaining(cert.effective_not_after, now)
    lines.append(f"Days left: {left}" + (" (expired)" if threshold == EXPIRED else ""))
    lines.append("Used by:")
    for use in cert.usages:
        if use.role == TARGET:
            lines.append(f"  scan target {use.listener_id} (served there)")
            continue
        renewal = renewals.get(use.listener_id, "no staged renewal")
        lines.append(
            f"  listener {use.listener_id} port {use.listener_port}, "
            f"role {'CA' if use.role == 'ca' else use.role}; "
            f"staged renewal: {renewal}"
        )
    return "\n".join(lines)


def listener_ids(cert: CertInUse) -> list[str]:
    """The listeners using the certificate, each once, in order."""
    return list(dict.fromkeys(u.listener_id for u in cert.usages))


def effective_thresholds(own: Sequence[int] | None, default: Sequence[int]) -> tuple[int, ...]:
    """A listener's thresholds: its own `AlertThresholdsDays`, else the configured default."""
    return tuple(own) if own else tuple(default)
