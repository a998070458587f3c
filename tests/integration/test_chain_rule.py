"""One chain rule end to end: what the candidate rules accept, the live probe and a stdlib
TLS client accept too, for many PKI shapes; an AKI-less PKI rotates through the real proxy."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlmodel import select

from certwatch.pki import x509 as cx
from certwatch.rotation.candidates import Offer, offer_problem
from certwatch.scan.probe import ProbeTarget, probe_sync
from certwatch.store.db import transaction
from certwatch.store.models import ProbeResult
from tests.certfactory import Issued, issue, make_pki
from tests.integration.rotation_helpers import NAMES, make_env

NAME = "a.example.com"


def _cross_sign(subject: Issued, by: Issued, aki: bool) -> x509.Certificate:
    """`subject`'s name and key, issued by `by`: the cross-certificate of a root moving over
    (with `by`'s Authority Key Identifier when `aki`)."""
    signer = by.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject.cert.subject)
        .issuer_name(by.cert.subject)
        .public_key(subject.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(subject.cert.not_valid_before_utc)
        .not_valid_after(subject.cert.not_valid_after_utc)
    )
    for extension in subject.cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    if aki:
        identifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(by.key.public_key())
        builder = builder.add_extension(identifier, critical=False)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def _pki(
    key: str, aki: bool, shape: str
) -> tuple[Issued, list[x509.Certificate], x509.Certificate]:
    """A leaf for NAME, the chain a server sends (leaf first) and the one root to trust."""
    root = issue(common_name=f"{shape} root CA", ca=True, key=key, days=3650)
    served_above: list[x509.Certificate] = []
    trusted = root.cert
    if shape == "cross":
        old = issue(common_name="old root CA", ca=True, key=key, days=3650)
        served_above = [_cross_sign(root, old, aki)]
        trusted = old.cert
    first = root.issue(common_name=f"{shape} intermediate CA", ca=True, key=key, aki=aki)
    issuer = first
    if shape == "two":
        issuer = first.issue(common_name=f"{shape} second CA", ca=True, key=key, aki=aki)
    leaf = issuer.issue(NAME, key=key, aki=aki)
    return leaf, [leaf.cert, *leaf.parents, *served_above], trusted


@contextmanager
def _tls_server(chain: list[x509.Certificate], leaf: Issued, tmp_path: Path) -> Iterator[int]:
    """A stdlib TLS server on 127.0.0.1 sending `chain`; yields its port."""
    cert_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert_file.write_text(cx.to_pem(chain))
    key_file.write_text(leaf.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with ctx.wrap_socket(raw, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _stdlib_client_accepts(port: int, root: x509.Certificate) -> bool:
    """Python's default client context (CERT_REQUIRED, hostname checked) trusting `root`."""
    ctx = ssl.create_default_context(cadata=cx.to_pem([root]))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=NAME),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


@pytest.mark.parametrize("shape", ["one", "two", "cross"])
@pytest.mark.parametrize("aki", [True, False], ids=["aki", "no-aki"])
@pytest.mark.parametrize("key", ["rsa2048", "ec256", "ed25519"])
def test_a_valid_candidate_passes_the_live_check(
    key: str, aki: bool, shape: str, tmp_path: Path
) -> None:
    """A chain the candidate rules accept is served, probed complete and accepted by `ssl`."""
    leaf, chain, root = _pki(key, aki, shape)
    now = dt.datetime.now(dt.UTC)
    assert offer_problem(Offer(chain, True), [root], now) is None
    with _tls_server(chain, leaf, tmp_path) as port:
        [outcome] = probe_sync([ProbeTarget("t", "127.0.0.1", port, NAME)], [root], now)
        assert outcome.success and outcome.chain_complete, outcome.chain_error
        assert bool(outcome.findings) is not aki
        assert _stdlib_client_accepts(port, root)


def test_a_rejected_candidate_fails_the_live_check_too(tmp_path: Path) -> None:
    """Without its intermediate a chain is rejected, probed incomplete and refused by `ssl`."""
    leaf, chain, root = _pki("ec256", True, "one")
    now = dt.datetime.now(dt.UTC)
    problem = offer_problem(Offer(chain[:1], True), [root], now)
    assert problem is not None and "unable to build a path" in problem
    with _tls_server(chain[:1], leaf, tmp_path) as port:
        [outcome] = probe_sync([ProbeTarget("t", "127.0.0.1", port, NAME)], [root], now)
        assert outcome.success and not outcome.chain_complete
        assert not _stdlib_client_accepts(port, root)


def test_aki_less_pki_probes_complete_and_rotates_applied(tmp_path: Path) -> None:
    """Through the real proxy: an AKI-less listener probes chain_complete=1 with a
    NotStrictlyCompliant warning, and its staged renewal is rotated Applied."""
    env = make_env(tmp_path, pki=make_pki("lax", aki=False))
    try:
        env.call("ScanNow")
        with transaction(env.service.node.engine) as session:
            rows = session.exec(
                select(ProbeResult).where(ProbeResult.listener_id == env.listener_id)
            ).all()
        assert rows and all(r.success and r.chain_complete for r in rows), rows
        assert all(
            any("Missing Authority Key Identifier" in w for w in r.warnings) for r in rows
        )
        labels = {"target": env.listener_id, "server_name": NAMES[0]}
        assert env.service.registry.get_sample_value(
            "certwatch_probe_chain_complete", labels
        ) == 1.0
        warnings = env.call("GetCertificate", CertificateId=env.old_id)["Certificate"]["Warnings"]
        assert any(w.startswith("NotStrictlyCompliant: ") for w in warnings), warnings
        assert "IncompleteChain" not in warnings

        new = env.pki.leaf(*NAMES, days=90)
        assert env.stage(new)["Status"] == "Pending"
        rotated = env.call("RotateListenerCertificate", ListenerId=env.listener_id)
        assert rotated["Result"] == "Applied", rotated["Reason"]
        assert all(env.served(name) == new.fingerprint for name in NAMES)
    finally:
        env.close()
