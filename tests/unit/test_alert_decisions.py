"""Expiry alert decisions: thresholds, boundaries, downtime, expiry, replacement, chains."""

from __future__ import annotations

import datetime as dt

import pytest

from certwatch.alerts.rules import (
    EXPIRED,
    REVOKED,
    AlertRecord,
    CertInUse,
    ChainLink,
    Due,
    Plan,
    Usage,
    body,
    effective_thresholds,
    notify_type,
    plan_alerts,
    reached,
    title,
    urgency,
)

NOW = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def cert(
    left: dt.timedelta,
    thresholds: tuple[int, ...] = (30, 7, 1),
    cert_id: str = "cert-0000000000000001",
    chain: tuple[ChainLink, ...] = (),
    usages: tuple[Usage, ...] | None = None,
) -> CertInUse:
    """A certificate in use by one listener with `left` time to NotAfter."""
    uses = usages or (Usage("lsn-0000000000000001", 8443, "default", thresholds),)
    return CertInUse(cert_id, "www.example.com", ("www.example.com",), NOW + left, uses, chain)


def sent(threshold: str, delivered: bool = True, alert_id: str = "alr-1") -> AlertRecord:
    """An alert already stored for the default test certificate."""
    return AlertRecord(alert_id, "cert-0000000000000001", threshold, delivered)


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (60 * DAY, None),
        (30 * DAY + SECOND, None),
        (30 * DAY, "30"),
        (30 * DAY - SECOND, "30"),
        (7 * DAY + SECOND, "30"),
        (7 * DAY, "7"),
        (6.5 * DAY, "7"),
        (DAY + SECOND, "7"),
        (DAY, "1"),
        (0.5 * DAY, "1"),
        (SECOND, "1"),
        (dt.timedelta(0), EXPIRED),
        (-SECOND, EXPIRED),
        (-400 * DAY, EXPIRED),
    ],
)
def test_threshold_boundaries(left: dt.timedelta, expected: str | None) -> None:
    """A threshold is reached at or below its days (to the second); zero left is expired."""
    assert reached(cert(left), NOW) == expected


def test_first_threshold_creates_one_alert() -> None:
    """Crossing 30 days with nothing sent yet plans exactly one new 30-day alert."""
    c = cert(29.9 * DAY)
    assert plan_alerts([c], [], NOW).send == (Due(c, "30"),)


def test_nothing_before_the_first_threshold() -> None:
    """A certificate with 31 days left gets no alert."""
    assert plan_alerts([cert(31 * DAY)], [], NOW).send == ()


def test_sent_threshold_not_repeated() -> None:
    """A delivered 30-day alert is not sent again while still in the 30-day band."""
    plan = plan_alerts([cert(20 * DAY)], [sent("30")], NOW)
    assert plan.send == () and plan.drop == ()


def test_next_threshold_after_previous_sent() -> None:
    """After 30 was delivered, reaching 7 days plans the 7-day alert."""
    c = cert(7 * DAY)
    assert plan_alerts([c], [sent("30")], NOW).send == (Due(c, "7"),)


def test_downtime_across_thresholds_sends_only_most_urgent() -> None:
    """Down from 31 days to 0.5 days left: only the 1-day alert is sent, not 30 and 7."""
    c = cert(0.5 * DAY)
    plan = plan_alerts([c], [], NOW)
    assert plan.send == (Due(c, "1"),)


def test_downtime_into_expiry_sends_only_expired() -> None:
    """A certificate that expired while nothing was sent alerts once, as expired."""
    c = cert(-3 * DAY)
    assert plan_alerts([c], [], NOW).send == (Due(c, EXPIRED),)


def test_expired_alerts_once() -> None:
    """After the expired alert is delivered, later scans send nothing more."""
    assert plan_alerts([cert(-10 * DAY)], [sent(EXPIRED)], NOW).send == ()


def test_pending_alert_is_retried() -> None:
    """An undelivered alert at the reached threshold is sent again, with its id."""
    c = cert(6 * DAY)
    plan = plan_alerts([c], [sent("7", delivered=False, alert_id="alr-7")], NOW)
    assert plan.send == (Due(c, "7", "alr-7"),) and plan.drop == ()


def test_pending_less_urgent_alert_superseded() -> None:
    """A 30-day alert still pending when 7 days is reached is dropped; 7 is sent instead."""
    c = cert(5 * DAY)
    plan = plan_alerts([c], [sent("30", delivered=False, alert_id="alr-30")], NOW)
    assert plan.send == (Due(c, "7"),)
    assert plan.drop == ("alr-30",)


def test_replaced_certificate_pending_alert_dropped() -> None:
    """A pending alert of a certificate no longer in use is dropped, and nothing is sent."""
    other = cert(90 * DAY, cert_id="cert-0000000000000002")
    plan = plan_alerts([other], [sent("7", delivered=False, alert_id="alr-old")], NOW)
    assert plan.send == () and plan.drop == ("alr-old",)


def test_replaced_certificate_delivered_alert_kept() -> None:
    """Delivered alerts of a replaced certificate stay as the record (never dropped)."""
    assert plan_alerts([], [sent("7")], NOW).drop == ()


def test_thresholds_no_longer_reached_drop_pending() -> None:
    """A pending alert whose threshold the listener no longer asks for is dropped."""
    plan = plan_alerts(
        [cert(20 * DAY, thresholds=(7, 1))], [sent("30", delivered=False, alert_id="a")], NOW
    )
    assert plan == Plan((), ("a",))


def test_more_urgent_delivered_alert_covers_current_level() -> None:
    """A delivered 7-day alert covers the 30-day level if thresholds later change to [30]."""
    assert plan_alerts([cert(5 * DAY, thresholds=(30,))], [sent("7")], NOW).send == ()


def test_listener_override_thresholds() -> None:
    """A listener with AlertThresholdsDays [14] alerts at 14 days, not 30."""
    assert reached(cert(20 * DAY, thresholds=(14,)), NOW) is None
    assert reached(cert(14 * DAY, thresholds=(14,)), NOW) == "14"


def test_union_of_listener_thresholds() -> None:
    """A certificate on two listeners ([30] and [10]) alerts at the union: 30, then 10."""
    uses = (
        Usage("lsn-a", 443, "default", (30,)),
        Usage("lsn-b", 8443, "additional", (10,)),
    )
    assert cert(25 * DAY, usages=uses).thresholds == (30, 10)
    assert reached(cert(25 * DAY, usages=uses), NOW) == "30"
    assert reached(cert(9 * DAY, usages=uses), NOW) == "10"


def test_effective_thresholds_override_or_default() -> None:
    """A listener without its own thresholds uses the configured default."""
    assert effective_thresholds(None, [30, 7, 1]) == (30, 7, 1)
    assert effective_thresholds([5], [30, 7, 1]) == (5,)


def test_intermediate_expiring_first_alerts() -> None:
    """An intermediate with 6 days left alerts at 7 for the leaf's id though the leaf has 300."""
    link = ChainLink(1, "Example Intermediate", NOW + 6 * DAY)
    c = cert(300 * DAY, chain=(link,))
    assert plan_alerts([c], [], NOW).send == (Due(c, "7"),)
    assert "Example Intermediate" in title(c, "7")
    assert "intermediate Example Intermediate (chain position 1)" in body(c, "7", NOW, {})


def test_intermediate_outliving_leaf_ignored() -> None:
    """An intermediate that expires after the leaf does not change the leaf's alerts."""
    link = ChainLink(1, "Long CA", NOW + 900 * DAY)
    c = cert(40 * DAY, chain=(link,))
    assert c.expiring_link is None and reached(c, NOW) is None


def test_several_certificates_independent() -> None:
    """Each certificate in use is decided on its own."""
    a = cert(6 * DAY, cert_id="cert-a")
    b = cert(45 * DAY, cert_id="cert-b")
    c = cert(-1 * DAY, cert_id="cert-c")
    assert plan_alerts([a, b, c], [], NOW).send == (Due(a, "7"), Due(c, EXPIRED))


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        ("30", "www.example.com expires within 30 days"),
        ("7", "www.example.com expires within 7 days"),
        ("1", "www.example.com expires within 1 day"),
        (EXPIRED, "www.example.com has expired"),
    ],
)
def test_titles(threshold: str, expected: str) -> None:
    """Titles name the common name and the threshold in words."""
    assert title(cert(DAY), threshold) == expected


def test_body_names_everything_a_reader_needs() -> None:
    """The body names listener, port, id, common name, SANs, role, NotAfter, days, renewal."""
    uses = (
        Usage("lsn-a", 443, "default", (30,)),
        Usage("lsn-b", 8443, "ca", (30,)),
    )
    text = body(cert(6.5 * DAY, usages=uses), "7", NOW, {"lsn-a": "stg-1 ready"})
    for part in (
        "lsn-a port 443",
        "lsn-b port 8443",
        "cert-0000000000000001",
        "www.example.com",
        "role default",
        "role CA",
        "NotAfter: 2026-12-03T12:00:00Z",
        "Days left: 6",
        "staged renewal: stg-1 ready",
        "staged renewal: no staged renewal",
    ):
        assert part in text


def test_urgency_order() -> None:
    """Expired is most urgent, then fewer days."""
    assert sorted(["30", EXPIRED, "1", "7"], key=urgency) == [EXPIRED, "1", "7", "30"]


def test_no_thresholds_still_alerts_expiry() -> None:
    """With an empty threshold list, only expiry alerts, once."""
    assert reached(cert(2 * DAY, thresholds=()), NOW) is None
    assert reached(cert(-SECOND, thresholds=()), NOW) == EXPIRED


@pytest.mark.parametrize(
    ("left", "expected"),
    [(14 * DAY + SECOND, "30"), (14 * DAY, "14"), (3 * DAY, "14"), (2 * DAY, "2")],
)
def test_union_boundaries(left: dt.timedelta, expected: str) -> None:
    """Union of [30, 14] and [2]: each boundary of either listener is exact to the second."""
    uses = (Usage("lsn-a", 443, "default", (30, 14)), Usage("lsn-b", 444, "additional", (2,)))
    assert reached(cert(left, usages=uses), NOW) == expected


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (EXPIRED, "failure"),
        (REVOKED, "failure"),
        ("1", "failure"),
        ("3", "warning"),
        ("7", "warning"),
        ("14", "info"),
        ("30", "info"),
        ("60", "info"),
    ],
)
def test_notify_type_follows_severity(threshold: str, expected: str) -> None:
    """Revoked, expired and 1-day alerts are failures, up to 7 days warnings, beyond that
    info."""
    assert notify_type(threshold) == expected
