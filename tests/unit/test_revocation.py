"""The pure revocation checks (`pki.revocation`): sources named, CRL and OCSP rules."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certwatch.alerts import rules
from certwatch.pki import revocation
from certwatch.pki.revocation import RevocationUnavailable
from tests.certfactory import Issued, Pki, Revocation, make_crl, make_pki

URL = "http://127.0.0.1:9/ca.crl"


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A root → intermediate PKI."""
    return make_pki("revocation unit")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ocsp_response(
    leaf: Issued,
    issuer: Issued,
    status: ocsp.OCSPCertStatus,
    signer: Issued | None = None,
    next_update: dt.datetime | None = None,
) -> bytes:
    revoked_at = _now() - dt.timedelta(hours=1) if status == ocsp.OCSPCertStatus.REVOKED else None
    reason = x509.ReasonFlags.key_compromise if revoked_at else None
    signing = signer or issuer
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            leaf.cert, issuer.cert, hashes.SHA1(), status, _now() - dt.timedelta(minutes=1),
            next_update or _now() + dt.timedelta(hours=1), revoked_at, reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signing.cert)
    )
    response = builder.sign(signing.key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def test_sources_are_read_from_the_extensions(pki: Pki) -> None:
    """CRL distribution points and AIA OCSP responders are read; a bare leaf names none."""
    leaf = pki.leaf("a.test", crl_url=URL, ocsp_url="http://127.0.0.1:9/ocsp")
    assert revocation.crl_urls(leaf.cert) == [URL]
    assert revocation.ocsp_urls(leaf.cert) == ["http://127.0.0.1:9/ocsp"]
    bare = pki.leaf("b.test")
    assert (revocation.crl_urls(bare.cert), revocation.ocsp_urls(bare.cert)) == ([], [])


def test_chain_issuers_find_the_intermediate_and_the_root(pki: Pki) -> None:
    """Each certificate's issuer is found above it or among the roots; the root has none."""
    leaf = pki.leaf("a.test")
    chain = [leaf.cert, pki.intermediate.cert, pki.root.cert]
    assert revocation.chain_issuers(chain, []) == [pki.intermediate.cert, pki.root.cert, None]
    assert revocation.chain_issuers([leaf.cert], []) == [None]


def test_crl_lists_the_revoked_serial_with_time_and_reason(pki: Pki) -> None:
    """A checked CRL says revoked (time, reason) for a listed serial and good for another."""
    revoked, other = pki.leaf("r.test"), pki.leaf("g.test")
    when = (_now() - dt.timedelta(hours=2)).replace(microsecond=0)
    crl = revocation.parse_crl(
        make_crl(
            pki.intermediate, [Revocation(revoked.cert, when, x509.ReasonFlags.superseded)]
        )
    )
    revocation.check_crl(crl, pki.intermediate.cert, _now())
    verdict = revocation.crl_verdict(crl, revoked.cert)
    assert (verdict.revoked, verdict.revoked_at, verdict.reason) == (True, when, "superseded")
    assert revocation.crl_verdict(crl, other.cert).revoked is False


def test_crl_without_reason_reads_unspecified(pki: Pki) -> None:
    """A CRL entry without a reason code reads `unspecified`."""
    leaf = pki.leaf("r.test")
    crl = revocation.parse_crl(make_crl(pki.intermediate, [Revocation(leaf.cert, _now())]))
    assert revocation.crl_verdict(crl, leaf.cert).reason == "unspecified"


def test_forged_stale_or_foreign_crl_is_unavailable(pki: Pki) -> None:
    """A CRL signed by another key, past its nextUpdate, or of another issuer is refused."""
    impostor = make_pki("impostor")
    forged = revocation.parse_crl(make_crl(pki.intermediate, signer=impostor.intermediate))
    with pytest.raises(RevocationUnavailable, match="signature"):
        revocation.check_crl(forged, pki.intermediate.cert, _now())
    stale = revocation.parse_crl(
        make_crl(
            pki.intermediate,
            this_update=_now() - dt.timedelta(days=2),
            next_update=_now() - dt.timedelta(days=1),
        )
    )
    with pytest.raises(RevocationUnavailable, match="stale"):
        revocation.check_crl(stale, pki.intermediate.cert, _now())
    foreign = revocation.parse_crl(make_crl(impostor.intermediate))
    with pytest.raises(RevocationUnavailable, match="issued by"):
        revocation.check_crl(foreign, pki.intermediate.cert, _now())
    with pytest.raises(RevocationUnavailable, match="not a CRL"):
        revocation.parse_crl(b"<html>not found</html>")


def test_ocsp_request_names_the_certificate(pki: Pki) -> None:
    """The OCSP request carries the leaf's serial number."""
    leaf = pki.leaf("a.test")
    request = ocsp.load_der_ocsp_request(revocation.ocsp_request(leaf.cert, pki.intermediate.cert))
    assert request.serial_number == leaf.cert.serial_number


def test_ocsp_good_and_revoked_responses_are_read(pki: Pki) -> None:
    """A response signed by the issuer says good, or revoked with its time and reason."""
    leaf = pki.leaf("a.test")
    good = _ocsp_response(leaf, pki.intermediate, ocsp.OCSPCertStatus.GOOD)
    verdict = revocation.ocsp_verdict(good, leaf.cert, pki.intermediate.cert, _now())
    assert (verdict.source, verdict.revoked) == ("ocsp", False)
    bad = _ocsp_response(leaf, pki.intermediate, ocsp.OCSPCertStatus.REVOKED)
    verdict = revocation.ocsp_verdict(bad, leaf.cert, pki.intermediate.cert, _now())
    assert (verdict.revoked, verdict.reason) == (True, "keyCompromise")
    assert verdict.revoked_at is not None


def test_ocsp_from_an_unauthorised_signer_or_stale_is_unavailable(pki: Pki) -> None:
    """A response signed by a key the issuer did not authorise, stale, for another
    certificate, unknown, or not successful is refused."""
    leaf, other = pki.leaf("a.test"), pki.leaf("b.test")
    stranger = make_pki("stranger").intermediate
    now = _now()
    forged = _ocsp_response(leaf, pki.intermediate, ocsp.OCSPCertStatus.REVOKED, signer=stranger)
    with pytest.raises(RevocationUnavailable, match="signed neither"):
        revocation.ocsp_verdict(forged, leaf.cert, pki.intermediate.cert, now)
    stale = _ocsp_response(
        leaf, pki.intermediate, ocsp.OCSPCertStatus.GOOD, next_update=now - dt.timedelta(hours=1)
    )
    with pytest.raises(RevocationUnavailable, match="stale"):
        revocation.ocsp_verdict(stale, leaf.cert, pki.intermediate.cert, now)
    for_other = _ocsp_response(other, pki.intermediate, ocsp.OCSPCertStatus.GOOD)
    with pytest.raises(RevocationUnavailable, match="does not answer"):
        revocation.ocsp_verdict(for_other, leaf.cert, pki.intermediate.cert, now)
    unknown = _ocsp_response(leaf, pki.intermediate, ocsp.OCSPCertStatus.UNKNOWN)
    with pytest.raises(RevocationUnavailable, match="does not know"):
        revocation.ocsp_verdict(unknown, leaf.cert, pki.intermediate.cert, now)
    refused = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    ).public_bytes(serialization.Encoding.DER)
    with pytest.raises(RevocationUnavailable, match="unauthorized"):
        revocation.ocsp_verdict(refused, leaf.cert, pki.intermediate.cert, now)


def test_delegated_ocsp_responder_is_accepted(pki: Pki) -> None:
    """A responder certificate the issuer signed with the OCSPSigning usage may sign."""
    leaf = pki.leaf("a.test")
    delegate = pki.intermediate.issue(common_name="ocsp responder")
    builder = x509.CertificateBuilder(
        issuer_name=pki.intermediate.cert.subject,
        subject_name=delegate.cert.subject,
        public_key=delegate.key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=_now() - dt.timedelta(hours=1),
        not_valid_after=_now() + dt.timedelta(days=1),
    ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]), False)
    responder = Issued(builder.sign(pki.intermediate.key, hashes.SHA256()), delegate.key)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            leaf.cert, pki.intermediate.cert, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
            _now() - dt.timedelta(minutes=1), _now() + dt.timedelta(hours=1), None, None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.NAME, responder.cert)
        .certificates([responder.cert])
        .sign(responder.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    verdict = revocation.ocsp_verdict(response, leaf.cert, pki.intermediate.cert, _now())
    assert verdict.revoked is False


def test_a_revoked_certificate_alerts_once_apart_from_expiry() -> None:
    """A revoked certificate gets one `revoked` alert, retried until delivered, beside its
    expiry alert; once delivered it is not sent again."""
    now = _now()
    revoked = rules.Revocation(0, "shop.test", "crl", URL, now, "keyCompromise")
    cert = rules.CertInUse(
        "cert-1", "shop.test", ("shop.test",), now + dt.timedelta(days=5),
        (rules.Usage("lsn-1", 443, "default", (30, 7)),), revocation=revoked,
    )
    plan = rules.plan_alerts([cert], [], now)
    assert sorted(d.threshold for d in plan.send) == ["7", "revoked"]
    assert rules.title(cert, "revoked") == "shop.test has been revoked"
    assert "keyCompromise" in rules.body(cert, "revoked", now, {})
    pending = [rules.AlertRecord("alr-1", "cert-1", "revoked", False)]
    assert [d.alert_id for d in rules.plan_alerts([cert], pending, now).send] == [None, "alr-1"]
    sent = [rules.AlertRecord("alr-1", "cert-1", "revoked", True)]
    assert [d.threshold for d in rules.plan_alerts([cert], sent, now).send] == ["7"]
