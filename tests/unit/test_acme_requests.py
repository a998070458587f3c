"""The rules of certificate requests: which names are accepted, and how retries back off."""

from __future__ import annotations

import datetime as dt

import pytest

from certwatch import errors
from certwatch.acme.renewal import renew_at
from certwatch.acme.requests import check_names, retry_delay
from certwatch.config import AcmeConfig

HTTP = AcmeConfig(directory_url="https://acme.test/dir", challenge="http-01")
DNS = AcmeConfig(directory_url="https://acme.test/dir", challenge="dns-01", dns_hook="/bin/true")


def test_retry_waits_double_from_one_minute_to_six_hours() -> None:
    """Each failure doubles the wait, starting at one minute and never beyond six hours."""
    assert retry_delay(1, 0.0) == dt.timedelta(minutes=1)
    assert retry_delay(2, 0.0) == dt.timedelta(minutes=2)
    assert retry_delay(5, 0.0) == dt.timedelta(minutes=16)
    assert retry_delay(40, 0.99) == dt.timedelta(hours=6)


def test_jitter_only_lengthens_the_wait() -> None:
    """Jitter adds up to a fifth, so a retry never comes sooner than the plain doubling."""
    assert dt.timedelta(minutes=4) < retry_delay(3, 0.5) <= dt.timedelta(minutes=4.8)


def test_names_are_normalised_and_repeats_dropped() -> None:
    """Names are lower-cased, a trailing dot dropped, and each kept once."""
    assert check_names(HTTP, ["WWW.Example.test.", "www.example.test"]) == ["www.example.test"]


def test_wildcards_need_dns01() -> None:
    """A wildcard is refused with http-01 and accepted with dns-01."""
    with pytest.raises(errors.UnsupportedChallenge):
        check_names(HTTP, ["*.example.test"])
    assert check_names(DNS, ["*.example.test"]) == ["*.example.test"]


@pytest.mark.parametrize("name", ["192.0.2.1", "localhost", "a..b", "-a.example", "*.*.x.test"])
def test_names_that_are_not_dns_names_are_refused(name: str) -> None:
    """IP addresses, single labels and malformed names are InvalidParameter."""
    with pytest.raises(errors.InvalidParameter):
        check_names(DNS, [name])


def test_renewal_is_due_with_a_third_of_the_lifetime_left_or_before_days_if_sooner() -> None:
    """Renewal comes at two thirds of the lifetime, or `before_days` ahead when that is sooner."""
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert renew_at(start, start + dt.timedelta(days=90), 30) == start + dt.timedelta(days=60)
    long = start + dt.timedelta(days=1095)
    assert renew_at(start, long, 10) == start + dt.timedelta(days=730)
    assert renew_at(start, start + dt.timedelta(days=30), 20) == start + dt.timedelta(days=10)
