"""The metrics the alert rules build on: thresholds per certificate, facts, build, process."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.integration.rotation_helpers import NAMES, make_env


def test_threshold_info_build_and_process_series(tmp_path: Path) -> None:
    """A listener at [60, 14] gives its certificate those thresholds in seconds; the
    certificate's facts, the build and the process/python collectors are exported."""
    env = make_env(tmp_path)
    try:
        registry = env.service.registry
        sample = registry.get_sample_value
        labels = {"certificate_id": env.old_id}
        assert sample("certwatch_certificate_alert_threshold_seconds",
                      {**labels, "threshold": "30"}) == 30 * 86400.0
        env.call("UpdateListenerAttribute", ListenerId=env.listener_id,
                 AlertThresholdsDays=[60, 14])
        assert sample("certwatch_certificate_alert_threshold_seconds",
                      {**labels, "threshold": "60"}) == 60 * 86400.0
        assert sample("certwatch_certificate_alert_threshold_seconds",
                      {**labels, "threshold": "30"}) is None
        facts = {
            s.labels["certificate_id"]: s.labels
            for metric in registry.collect() if metric.name == "certwatch_certificate_info"
            for s in metric.samples
        }
        assert facts[env.old_id]["fingerprint_sha256"] == env.old.fingerprint
        assert facts[env.old_id]["key_algorithm"] == "EC"
        names = {metric.name for metric in registry.collect()}
        assert {"certwatch_build_info", "process_cpu_seconds", "python_info",
                "python_gc_objects_collected"} <= names
    finally:
        env.close()


def test_a_pending_staged_renewal_exports_when_its_certificate_rotates(tmp_path: Path) -> None:
    """A staged certificate covering the listener's names and expiring later puts the old
    certificate's rotation time (NotAfter - rotation.before_days) on the renewal metric; one
    for other names does not."""
    env = make_env(tmp_path, old_days=40)
    try:
        sample = env.service.registry.get_sample_value
        metric = "certwatch_certificate_renewal_timestamp_seconds"
        labels = {"certificate_id": env.old_id}
        env.stage(env.pki.leaf("elsewhere.example.org", days=90))
        assert sample(metric, labels) is None
        env.stage(env.pki.leaf(*NAMES, days=90))
        expected = env.old.cert.not_valid_after_utc - dt.timedelta(days=30)
        assert sample(metric, labels) == expected.timestamp()
    finally:
        env.close()
