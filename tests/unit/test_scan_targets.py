"""How certificates served by external scan targets join the certificates in use."""

from __future__ import annotations

import datetime as dt

from certwatch.alerts.rules import TARGET, CertInUse, Usage, plan_alerts, target_certificate_id
from certwatch.scan.inventory import CertFacts
from certwatch.scan.probes import with_targets

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
FP_KNOWN, FP_OTHER = "ab" * 32, "cd" * 32


def _served(fingerprint: str, address: str, thresholds: tuple[int, ...]) -> CertInUse:
    """A certificate a target served, 10 days left."""
    use = Usage(address, 443, TARGET, thresholds)
    return CertInUse(
        target_certificate_id(fingerprint), "t.test", ("t.test",), NOW + dt.timedelta(days=10),
        (use,),
    )


def _listener_cert() -> tuple[CertInUse, CertFacts]:
    """A certificate of the inventory used by one listener at [30, 7, 1]."""
    not_after = NOW + dt.timedelta(days=10)
    facts = CertFacts("crt-1", "t.test", ("t.test",), NOW, not_after, FP_KNOWN)
    use = Usage("lsn-1", 8443, "default", (30, 7, 1))
    return CertInUse("crt-1", "t.test", ("t.test",), not_after, (use,)), facts


def test_a_target_serving_an_inventory_certificate_adds_its_use_to_it() -> None:
    """A target serving `crt-1` makes no `srv-` entry: `crt-1` gets a second use."""
    cert, facts = _listener_cert()
    merged = with_targets([cert], {"crt-1": facts}, [_served(FP_KNOWN, "a.test:443", (60,))])
    assert [c.certificate_id for c in merged] == ["crt-1"]
    assert [u.role for u in merged[0].usages] == ["default", TARGET]
    assert merged[0].thresholds == (60, 30, 7, 1)


def test_targets_serving_one_certificate_share_one_entry_at_the_union_of_thresholds() -> None:
    """Two targets serving the same unknown certificate alert once, at both thresholds."""
    served = [_served(FP_OTHER, "a.test:443", (5,)), _served(FP_OTHER, "b.test:443", (14,))]
    (merged,) = with_targets([], {}, served)
    assert merged.certificate_id == "srv-" + FP_OTHER[:16]
    assert merged.thresholds == (14, 5)
    (due,) = plan_alerts([merged], [], NOW).send
    assert due.threshold == "14"


def test_a_target_below_its_thresholds_is_silent() -> None:
    """10 days left and thresholds [5]: nothing is due."""
    merged = with_targets([], {}, [_served(FP_OTHER, "a.test:443", (5,))])
    assert plan_alerts(merged, [], NOW).send == ()
