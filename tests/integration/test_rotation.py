"""Rotation end to end: a real service, the real proxy, real TLS clients on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from certwatch import clock, errors
from certwatch.rotation.auto import StagedRenewals
from certwatch.rotation.rotate import recover
from certwatch.store import history
from certwatch.store.db import transaction
from certwatch.store.models import Alert, Certificate, Listener, StagedCertificate
from tests.certfactory import Issued, Pki, make_pki
from tests.integration.rotation_helpers import NAMES, Env, make_env, served_fingerprint


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A listener serving a certificate with 10 days left; auto-rotation 30 days ahead."""
    made = make_env(tmp_path)
    yield made
    made.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One listener for the tests that only stage (they do not change what it serves)."""
    made = make_env(tmp_path_factory.mktemp("shared"))
    yield made
    made.close()


def _age(*paths: Path) -> None:
    """Make files look written a minute ago (settled)."""
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past))


def _rotations(env: Env, result: str) -> float | None:
    """`certwatch_rotations_total` of the listener for one result."""
    labels = {"listener_id": env.listener_id, "result": result}
    return env.service.registry.get_sample_value("certwatch_rotations_total", labels)


def test_stage_rotate_rollback(env: Env) -> None:
    """Stage → rotate serves the new leaf on every name → rollback serves the old one again."""
    new = env.pki.leaf(*NAMES, days=90)
    staged = env.stage(new)
    assert staged["Status"] == "Pending" and staged["Reason"] is None

    rotated = env.call("RotateListenerCertificate", ListenerId=env.listener_id)
    assert rotated["Result"] == "Applied", rotated["Reason"]
    assert all(env.served(name) == new.fingerprint for name in NAMES)
    assert env.default_id() != env.old_id

    rolled = env.call("RollbackListenerCertificate", ListenerId=env.listener_id)
    assert all(env.served(name) == env.old.fingerprint for name in NAMES)
    assert env.default_id() == env.old_id

    events = env.events()
    assert [(e["RotationEventId"], e["Result"]) for e in events[:2]] == [
        (rolled["RotationEventId"], "Applied"),
        (rotated["RotationEventId"], "Applied"),
    ]
    assert events[0]["OldCertificateId"] == events[1]["NewCertificateId"]
    assert events[0]["NewCertificateId"] == env.old_id == events[1]["OldCertificateId"]
    assert len(events) == 3 and events[2]["OldCertificateId"] is None  # the listener's creation
    listed = env.call("ListStagedCertificates", Status="Applied")["StagedCertificates"]
    assert [s["StagedCertificateId"] for s in listed] == [staged["StagedCertificateId"]]
    assert _rotations(env, "Applied") == 1.0  # the rollback is not a rotation


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda pki: pki.leaf("a.example.com", days=90), "does not cover b.example.com"),
        (lambda pki: pki.leaf(*NAMES, days=5), "not later than the current certificate"),
        (
            lambda pki: pki.leaf(*NAMES, not_before=clock.now() - dt.timedelta(days=9), days=-1),
            "expired at",
        ),
        (lambda pki: pki.leaf(*NAMES, days=90, key="rsa1024"), "weak key: RSA 1024 bits"),
        (
            lambda pki: make_pki("stranger").leaf(*NAMES, days=90),
            "the chain does not verify to a trusted root",
        ),
    ],
    ids=["names", "expiry", "validity", "weak", "chain"],
)
def test_stage_rejects_with_reason(shared: Env, make: Callable[[Pki], Issued], reason: str) -> None:
    """A staged certificate that breaks a rule is `Rejected`, with the reason."""
    issued = make(shared.pki)
    answer = shared.call(
        "StageCertificate",
        Certificate=issued.chain_pem,
        PrivateKey=issued.key_pem,
        ListenerId=shared.listener_id,
    )
    assert answer["Status"] == "Rejected"
    assert reason in answer["Reason"]
    listed = shared.call("ListStagedCertificates", Status="Rejected")["StagedCertificates"]
    assert any(s["StagedCertificateId"] == answer["StagedCertificateId"] for s in listed)


def test_stage_refuses_a_key_that_is_not_the_certificates(shared: Env) -> None:
    """A mismatched key is refused at the door (the upload check), and nothing is staged."""
    issued, other = shared.pki.leaf(*NAMES, days=90), shared.pki.leaf(*NAMES, days=90)
    before = shared.call("ListStagedCertificates")["StagedCertificates"]
    with pytest.raises(errors.ApiError) as caught:
        shared.call("StageCertificate", Certificate=issued.chain_pem, PrivateKey=other.key_pem)
    assert caught.value.code == "KeyCertificateMismatch"
    assert shared.call("ListStagedCertificates")["StagedCertificates"] == before


def test_untrusted_chain_is_rejected_and_the_old_leaf_stays(env: Env) -> None:
    """Rotating to a certificate from an untrusted CA is `Rejected`; the old leaf is served."""
    staged = env.stage(make_pki("stranger").leaf(*NAMES, days=90))
    answer = env.call(
        "RotateListenerCertificate",
        ListenerId=env.listener_id,
        StagedCertificateId=staged["StagedCertificateId"],
    )
    assert answer["Result"] == "Rejected"
    assert "does not verify to a trusted root" in answer["Reason"]
    assert env.served() == env.old.fingerprint and env.default_id() == env.old_id


def test_a_leaf_clients_refuse_is_rejected_at_staging_not_rolled_back(env: Env) -> None:
    """A leaf that clients refuse (client-auth only) fails the one chain rule when staged, as
    it would fail the live check: `Rejected` with the reason, never swapped in."""
    client_only = env.pki.leaf(*NAMES, days=90, client=True)
    staged = env.stage(client_only)
    assert staged["Status"] == "Rejected"
    assert "unsuitable certificate purpose" in staged["Reason"]
    answer = env.call("RotateListenerCertificate", ListenerId=env.listener_id)
    assert answer["Result"] != "Applied", answer
    assert env.served() == env.old.fingerprint and env.default_id() == env.old_id
    assert _rotations(env, "RolledBack") is None


def test_auto_rotation_from_the_staging_directory(env: Env) -> None:
    """Files dropped in the staging directory are staged at the next scan, the latest-expiring
    valid one is rotated in, read files move to processed/ or rejected/ with a .reason, and
    half-written files are left alone."""
    staging = env.service.config.staging_dir
    staging.mkdir(parents=True)
    sooner, later = env.pki.leaf(*NAMES, days=60), env.pki.leaf(*NAMES, days=120)
    weak = env.pki.leaf(*NAMES, days=90, key="rsa1024")
    (staging / "sooner.pem").write_text(sooner.chain_pem + sooner.key_pem)
    (staging / "later.crt").write_text(later.chain_pem)
    (staging / "later.key").write_text(later.key_pem)
    (staging / "weak.pem").write_text(weak.chain_pem + weak.key_pem)
    (staging / "partial.pem").write_text(later.chain_pem[: len(later.chain_pem) // 2])
    (staging / "lonely.crt").write_text(sooner.chain_pem)
    _age(*staging.iterdir())
    (staging / "fresh.pem").write_text(sooner.chain_pem + sooner.key_pem)

    for hook in env.service.before_scan:
        hook(env.service.node)

    assert all(env.served(name) == later.fingerprint for name in NAMES)
    assert env.events()[0]["Actor"] == "rotation"
    assert env.events()[0]["Result"] == "Applied"
    processed = {p.name for p in (staging / "processed").iterdir()}
    assert processed == {
        "sooner.pem",
        "sooner.pem.reason",
        "later.crt",
        "later.crt.reason",
        "later.key",
        "later.key.reason",
    }
    assert "Pending: staged as stg-" in (staging / "processed" / "sooner.pem.reason").read_text()
    assert {p.name for p in (staging / "rejected").iterdir()} == {"weak.pem", "weak.pem.reason"}
    assert "weak key" in (staging / "rejected" / "weak.pem.reason").read_text()
    left = {p.name for p in staging.iterdir() if p.is_file()}
    assert left == {"partial.pem", "lonely.crt", "fresh.pem"}
    statuses = {
        s["NotAfter"]: s["Status"] for s in env.call("ListStagedCertificates")["StagedCertificates"]
    }
    assert sorted(statuses.values()) == ["Applied", "Rejected", "Superseded"]


def test_renewal_lookup_names_the_staged_certificate_and_when(env: Env) -> None:
    """The alert lookup finds the staged renewal and says it rotates at the next scan
    (the default is already within `before_days`)."""
    staged = env.stage(env.pki.leaf(*NAMES, days=90))
    now = clock.now()
    with transaction(env.service.engine) as session:
        listener = session.get(Listener, env.listener_id)
        current = session.get(Certificate, env.old_id)
        assert listener is not None and current is not None
        renewal = StagedRenewals(env.service.node)(session, current, listener, now)
    assert renewal is not None
    assert renewal.staged_certificate_id == staged["StagedCertificateId"]
    assert renewal.rotates_at == now


def test_no_client_connection_fails_across_rotation_and_rollback(env: Env) -> None:
    """Four clients doing full handshakes and echoes in a loop see no failure while the
    certificate is rotated and rolled back, and they do see both leaves."""
    new = env.pki.leaf(*NAMES, days=90)
    env.stage(new)
    stop = threading.Event()
    failures: list[str] = []
    seen: list[set[str]] = [set() for _ in range(4)]

    def client(index: int) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                served = served_fingerprint(
                    env.port, NAMES[index % 2], env.pki.root_pem, b"x" * 512
                )
                seen[index].add(served)
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    rotated = env.call("RotateListenerCertificate", ListenerId=env.listener_id)
    time.sleep(0.3)
    env.call("RollbackListenerCertificate", ListenerId=env.listener_id)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    assert rotated["Result"] == "Applied"
    assert failures == []
    assert all(fingerprints == {env.old.fingerprint, new.fingerprint} for fingerprints in seen)


def test_additional_certificate_is_rotated_by_its_names(env: Env) -> None:
    """A renewal covering an additional certificate's names replaces that one (not the
    default) at the next scan: SNI clients get the new leaf, the default is untouched."""
    extra_id = _add_additional(env, env.pki.leaf("c.example.com", days=10))
    renewal = env.pki.leaf("c.example.com", days=90)
    assert env.stage(renewal)["Status"] == "Pending"

    for hook in env.service.before_scan:
        hook(env.service.node)

    assert env.served("c.example.com") == renewal.fingerprint
    assert env.served("a.example.com") == env.old.fingerprint
    answer = env.call("GetListenerAttribute", ListenerId=env.listener_id)
    assert extra_id not in answer["AdditionalCertificateIds"]
    assert len(answer["AdditionalCertificateIds"]) == 1
    newest = env.events()[0]
    assert (newest["Role"], newest["OldCertificateId"], newest["Result"]) == (
        "additional",
        extra_id,
        "Applied",
    )
    assert newest["NewCertificateId"] == answer["AdditionalCertificateIds"][0]


def _add_additional(env: Env, issued: Issued) -> str:
    """Upload `issued` and serve it as an additional certificate of the listener."""
    cert_id: str = env.call("UploadCertificate", **issued.upload_params("extra"))["CertificateId"]
    env.call(
        "AssociateAdditionalCertificatesWithListener",
        ListenerId=env.listener_id,
        AdditionalCertificateIds=[cert_id],
    )
    return cert_id


def test_recover_undoes_an_additional_swap_stopped_halfway(env: Env) -> None:
    """A crash between associating the renewal and disassociating the old additional
    certificate is undone at recovery: the old one alone is served, one event remains."""
    extra = env.pki.leaf("c.example.com", days=10)
    extra_id = _add_additional(env, extra)
    staged_id = env.stage(env.pki.leaf("c.example.com", days=90))["StagedCertificateId"]
    with transaction(env.service.engine) as session:
        row = session.get(StagedCertificate, staged_id)
        assert row is not None
        event = history.record(
            session,
            listener_id=env.listener_id,
            now=clock.now(),
            actor="rotation",
            old=extra_id,
            new=row.certificate_id,
            role="additional",
            result="InProgress",
            staged_certificate_id=staged_id,
        )
    env.service.call(
        "AssociateAdditionalCertificatesWithListener",
        {"ListenerId": env.listener_id, "AdditionalCertificateIds": [row.certificate_id]},
        actor="rotation",
        record_history=False,
    )
    recover(env.service.node)
    answer = env.call("GetListenerAttribute", ListenerId=env.listener_id)
    assert answer["AdditionalCertificateIds"] == [extra_id]
    assert env.served("c.example.com") == extra.fingerprint
    newest = env.events()[0]
    assert (newest["RotationEventId"], newest["Result"]) == (event.id, "RolledBack")
    assert len(env.events()) == 3  # creation, association of the old one, this rotation


def test_rotate_dry_run_and_client_token(env: Env) -> None:
    """DryRun names the candidate and changes nothing; a repeated ClientToken returns the
    first answer without rotating twice."""
    staged = env.stage(env.pki.leaf(*NAMES, days=90))
    dry = env.call("RotateListenerCertificate", ListenerId=env.listener_id, DryRun=True)
    assert dry["DryRun"] is True
    assert dry["StagedCertificateId"] == staged["StagedCertificateId"]
    assert env.default_id() == env.old_id and len(env.events()) == 1

    first = env.call("RotateListenerCertificate", ListenerId=env.listener_id, ClientToken="t-1")
    again = env.call("RotateListenerCertificate", ListenerId=env.listener_id, ClientToken="t-1")
    assert first == again and first["Result"] == "Applied"
    assert len(env.events()) == 2


def test_history_of_an_unknown_listener_is_not_found(env: Env) -> None:
    """ListRotationEvents for a listener that never existed is a 404 ListenerNotFound."""
    with pytest.raises(errors.ApiError) as caught:
        env.call("ListRotationEvents", ListenerId="lsn-0000000000000000")
    assert (caught.value.status, caught.value.code) == (404, "ListenerNotFound")


def test_recover_undoes_a_rotation_stopped_before_its_swap(env: Env) -> None:
    """An `InProgress` rotation whose swap never happened is settled `RolledBack` by the
    start-up recovery, and the old leaf is still served."""
    new_id = env.stage(env.pki.leaf(*NAMES, days=90))["StagedCertificateId"]
    event_id = _interrupted_rotation(env, new_id, swapped=False)
    recover(env.service.node)
    newest = env.events()[0]
    assert (newest["RotationEventId"], newest["Result"]) == (event_id, "RolledBack")
    assert "interrupted before the swap" in newest["Reason"]
    assert env.served() == env.old.fingerprint and env.default_id() == env.old_id


def test_recover_finishes_a_rotation_stopped_after_its_swap(env: Env) -> None:
    """An `InProgress` rotation whose swap was done is probed by the start-up recovery and
    settled `Applied`; the rotation stays one history entry."""
    new = env.pki.leaf(*NAMES, days=90)
    new_id = env.stage(new)["StagedCertificateId"]
    event_id = _interrupted_rotation(env, new_id, swapped=True)
    assert len(env.events()) == 2
    recover(env.service.node)
    events = env.events()
    assert [(e["RotationEventId"], e["Result"]) for e in events[:1]] == [(event_id, "Applied")]
    assert len(events) == 2
    assert all(env.served(name) == new.fingerprint for name in NAMES)


def _interrupted_rotation(env: Env, staged_id: str, swapped: bool) -> str:
    """Leave the store as a crash would: an `InProgress` event, and the swap done or not."""
    with transaction(env.service.engine) as session:
        row = session.get(StagedCertificate, staged_id)
        assert row is not None
        event = history.record(
            session,
            listener_id=env.listener_id,
            now=clock.now(),
            actor="api",
            old=env.old_id,
            new=row.certificate_id,
            result="InProgress",
            staged_certificate_id=staged_id,
        )
    if swapped:
        env.service.call(
            "UpdateListenerAttribute",
            {"ListenerId": env.listener_id, "CertificateIds": [row.certificate_id]},
            actor="rotation",
            record_history=False,
        )
    return event.id


def test_expiry_alert_names_the_staged_renewal_and_when_it_rotates(tmp_path: Path) -> None:
    """A scan's expiry alert for the default names the staged renewal and the time automatic
    rotation will swap it in (`NotAfter` − `before_days`)."""
    made = make_env(tmp_path, old_days=10, before_days=3)
    try:
        staged = made.stage(made.pki.leaf(*NAMES, days=90))["StagedCertificateId"]
        made.service.scanner.run()
        with transaction(made.service.engine) as session:
            bodies = session.exec(select(Alert.body).where(Alert.certificate_id == made.old_id))
            body = "\n".join(bodies)
        rotates_at = made.old.cert.not_valid_after_utc - dt.timedelta(days=3)
        assert f"{staged} ready" in body
        assert f"rotates at {clock.rfc3339(rotates_at)}" in body
        assert made.default_id() == made.old_id  # not due yet: nothing rotated
    finally:
        made.close()


def test_expiry_alert_of_an_additional_certificate_names_its_renewal(tmp_path: Path) -> None:
    """An additional certificate close to expiry alerts with its own staged renewal named."""
    made = make_env(tmp_path, old_days=90, before_days=3)
    try:
        extra_id = _add_additional(made, made.pki.leaf("c.example.com", days=10))
        staged = made.stage(made.pki.leaf("c.example.com", days=90))["StagedCertificateId"]
        made.service.scanner.run()
        with transaction(made.service.engine) as session:
            body = "\n".join(
                session.exec(select(Alert.body).where(Alert.certificate_id == extra_id))
            )
        assert f"{staged} ready" in body
    finally:
        made.close()
