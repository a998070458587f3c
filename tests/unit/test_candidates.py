"""The candidate rules for rotating a staged certificate in, one test per rule, fixed `now`."""

from __future__ import annotations

import datetime as dt

import pytest

from certwatch.rotation.candidates import Incumbent, Offer, Verdict, best, reject_reason
from tests.certfactory import Issued, Pki, make_pki

NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # after the test PKI's start
NAMES = ("a.example.com", "b.example.com")


@pytest.fixture(scope="module")
def pki() -> Pki:
    """One two-level PKI for the module."""
    return make_pki("candidates")


def _leaf(pki: Pki, *names: str, days: float = 90, **kwargs: object) -> Issued:
    start = NOW - dt.timedelta(days=1)
    return pki.leaf(*names, not_before=start, not_after=NOW + dt.timedelta(days=days), **kwargs)


def _offer(issued: Issued, key_matches: bool = True) -> Offer:
    return Offer([issued.cert, *issued.parents], key_matches)


def _current(days: float = 10, names: tuple[str, ...] = NAMES) -> Incumbent:
    return Incumbent(names, NOW + dt.timedelta(days=days))


def test_good_candidate_is_accepted(pki: Pki) -> None:
    """A renewal with the same names, a trusted chain and a later expiry is eligible."""
    assert reject_reason(_offer(_leaf(pki, *NAMES)), _current(), [pki.root.cert], NOW) is None


def test_key_must_match(pki: Pki) -> None:
    """A certificate whose private key is not its own is rejected."""
    offer = _offer(_leaf(pki, *NAMES), key_matches=False)
    reason = reject_reason(offer, _current(), [pki.root.cert], NOW)
    assert reason == "the private key does not match the certificate"


def test_chain_must_verify_to_a_trusted_root(pki: Pki) -> None:
    """A chain that ends in a root nobody trusts is rejected, saying so."""
    stranger = make_pki("stranger")
    reason = reject_reason(_offer(_leaf(stranger, *NAMES)), _current(), [pki.root.cert], NOW)
    assert reason is not None
    assert reason.startswith("the chain does not verify to a trusted root")


def test_must_cover_every_name_of_the_current_default(pki: Pki) -> None:
    """A renewal that drops one of the current names is rejected, naming the name."""
    reason = reject_reason(_offer(_leaf(pki, "a.example.com")), _current(), [pki.root.cert], NOW)
    assert reason == "does not cover b.example.com (names of the current certificate)"


def test_wildcard_covers_one_label(pki: Pki) -> None:
    """`*.example.com` covers `a.example.com` but not `x.a.example.com`."""
    offer = _offer(_leaf(pki, "*.example.com"))
    assert reject_reason(offer, _current(), [pki.root.cert], NOW) is None
    deep = _current(names=("x.a.example.com",))
    assert reject_reason(offer, deep, [pki.root.cert], NOW) == (
        "does not cover x.a.example.com (names of the current certificate)"
    )


def test_must_be_valid_now(pki: Pki) -> None:
    """An expired or not-yet-valid renewal is rejected with the date that rules it out."""
    expired = pki.leaf(
        *NAMES, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
    )
    early = pki.leaf(
        *NAMES, not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=90)
    )
    roots = [pki.root.cert]
    assert reject_reason(_offer(expired), _current(-5), roots, NOW) == (
        "expired at 2026-12-31T00:00:00Z"
    )
    assert reject_reason(_offer(early), _current(), roots, NOW) == (
        "not valid yet: valid from 2027-01-02T00:00:00Z"
    )


def test_must_expire_later_than_the_current_default(pki: Pki) -> None:
    """A renewal that expires no later than the certificate in use is rejected."""
    reason = reject_reason(_offer(_leaf(pki, *NAMES, days=10)), _current(10), [pki.root.cert], NOW)
    assert reason == (
        "expires 2027-01-11T00:00:00Z, not later than the current certificate "
        "(2027-01-11T00:00:00Z)"
    )


def test_must_not_be_weak(pki: Pki) -> None:
    """A renewal with a 1024-bit RSA key is rejected as weak."""
    reason = reject_reason(
        _offer(_leaf(pki, *NAMES, key="rsa1024")), _current(), [pki.root.cert], NOW
    )
    assert reason is not None and reason.startswith("weak key: RSA 1024 bits")


def test_latest_expiry_wins() -> None:
    """Among eligible candidates the one that expires last wins; rejected ones never do."""
    soon = Verdict("soon", NOW + dt.timedelta(days=60), None)
    late = Verdict("late", NOW + dt.timedelta(days=90), None)
    latest_but_bad = Verdict("bad", NOW + dt.timedelta(days=400), "expired")
    assert best([soon, latest_but_bad, late]) == late
    assert best([latest_but_bad]) is None
