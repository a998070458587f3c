"""Which staged certificate may replace a listener's certificate: pure rules over plain data.

A candidate must, in this order: have a key that matches it; be valid now; not be weak;
chain to a trusted root; not be revoked (by the last revocation check, `scan.revocation`);
cover every DNS name of the certificate it replaces; expire later than it. The first rule that
fails is the candidate's `Reason`. Among several candidates the one that expires last wins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography import x509 as cx509

from certwatch.clock import rfc3339
from certwatch.pki import x509
from certwatch.pki.verify import verify_chain
from offload.sni import name_matches

T = TypeVar("T")


@dataclass(frozen=True)
class Incumbent:
    """The certificate in use that a candidate would replace."""

    names: tuple[str, ...]
    not_after: dt.datetime


@dataclass(frozen=True)
class Offer:
    """A staged certificate: its chain (leaf first), whether its key matches the leaf, and
    why it is revoked (None: not found revoked)."""

    chain: Sequence[cx509.Certificate]
    key_matches: bool
    revoked: str | None = None

    @property
    def not_after(self) -> dt.datetime:
        """When the leaf expires."""
        return self.chain[0].not_valid_after_utc


def uncovered(names: Sequence[str], offered: Sequence[str]) -> list[str]:
    """The names no offered name (exact or `*.` wildcard of one label) covers."""
    return [n for n in names if not any(name_matches(pattern, n) for pattern in offered)]


def reject_reason(
    offer: Offer,
    incumbent: Incumbent,
    roots: Sequence[cx509.Certificate],
    now: dt.datetime,
) -> str | None:
    """None when `offer` may replace `incumbent` at `now`, else why not (the first failed rule)."""
    return offer_problem(offer, roots, now) or against(offer, incumbent)


def offer_problem(
    offer: Offer, roots: Sequence[cx509.Certificate], now: dt.datetime
) -> str | None:
    """The first failed rule that does not depend on the incumbent (key, validity, weak key,
    chain), or None."""
    leaf = offer.chain[0]
    if not offer.key_matches:
        return "the private key does not match the certificate"
    if now < leaf.not_valid_before_utc:
        return f"not valid yet: valid from {rfc3339(leaf.not_valid_before_utc)}"
    if now >= leaf.not_valid_after_utc:
        return f"expired at {rfc3339(leaf.not_valid_after_utc)}"
    weak = [cert for cert in offer.chain if x509.is_weak(cert)]
    if weak:
        info = x509.describe(weak[0])
        return (
            f"weak key: {info.key_algorithm} {info.key_size} bits "
            f"(CN={info.common_name or info.subject})"
        )
    verdict = verify_chain(offer.chain, roots, now, findings=False)
    if verdict.problem is not None:
        return f"the chain does not verify to a trusted root: {verdict.problem}"
    if offer.revoked is not None:
        return offer.revoked
    return None


def revocation_text(
    common_name: str,
    position: int,
    revoked_at: dt.datetime | None,
    reason: str | None,
    source: str,
    url: str,
) -> str:
    """How a candidate's revocation reads in its `Reason`."""
    which = (
        "revoked"
        if position == 0
        else f"its intermediate {common_name} (chain position {position}) is revoked"
    )
    when = rfc3339(revoked_at) if revoked_at else "an unknown time"
    return f"{which} since {when} ({reason or 'unspecified'}), per {source.upper()} {url}"


def against(offer: Offer, incumbent: Incumbent) -> str | None:
    """The first failed rule against `incumbent` (names covered, expires later), or None."""
    missing = uncovered(incumbent.names, x509.dns_names(offer.chain[0]))
    if missing:
        return f"does not cover {', '.join(missing)} (names of the current certificate)"
    if offer.not_after <= incumbent.not_after:
        return (
            f"expires {rfc3339(offer.not_after)}, not later than the current certificate "
            f"({rfc3339(incumbent.not_after)})"
        )
    return None


@dataclass(frozen=True)
class Verdict(Generic[T]):
    """One staged certificate judged against one incumbent: `reason` None means eligible."""

    item: T
    not_after: dt.datetime
    reason: str | None


def best(verdicts: Sequence[Verdict[T]]) -> Verdict[T] | None:
    """The eligible verdict that expires last (the earliest listed on a tie), or None."""
    eligible = [v for v in verdicts if v.reason is None]
    return max(eligible, key=lambda v: v.not_after, default=None)
