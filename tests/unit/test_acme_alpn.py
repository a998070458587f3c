"""tls-alpn-01 on the control plane: the challenge type and certificate (RFC 8737), and the
pending challenges in the store, which every snapshot carries while their row exists."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import josepy as jose
import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import select

from certwatch import errors
from certwatch.acme.alpn import STALE_AFTER, StoreChallenges, clear_stale
from certwatch.acme.challenges import ACME_IDENTIFIER, TLSALPN01, tls_alpn_cert
from certwatch.acme.requests import check_names
from certwatch.app.service import Service
from certwatch.changes.snapshot import SnapshotBuilder
from certwatch.config import AcmeConfig
from certwatch.inventory.change import Change
from certwatch.store.db import transaction
from certwatch.store.models import AcmeChallenge
from offload.spec import ChallengeCert
from tests.conftest import make_config

ALPN = AcmeConfig(directory_url="https://acme.test/dir", challenge="tls-alpn-01")
TOKEN = jose.b64encode(b"t" * 32).decode()


@pytest.fixture
def service(tmp_path: Path, store_url: str) -> Iterator[Service]:
    """A control-plane Service with no data plane, on each store; it waits only briefly for
    proxy nodes on SQLite."""
    svc = Service(make_config(tmp_path, store_url, proxy={"reload_interval": 0.01}))
    yield svc
    svc.close()


def _challenge_body() -> messages.ChallengeBody:
    return messages.ChallengeBody.from_json(
        {"type": "tls-alpn-01", "url": "https://acme.test/chall/1", "status": "pending",
         "token": TOKEN}
    )


def _built(service: Service) -> tuple[ChallengeCert, ...]:
    """The challenges of a snapshot built afresh from the store, as another node builds it."""
    builder = SnapshotBuilder(service.keybox, service.config.proxy)
    with transaction(service.engine) as session:
        return builder.build(session, 1).challenges


def test_tls_alpn_01_challenge_is_parsed_and_answered_with_an_empty_object() -> None:
    """A tls-alpn-01 challenge from the server is a TLSALPN01, answered with `{}`, and its
    validation is the SHA-256 of the key authorization."""
    key = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    chall = _challenge_body().chall
    assert isinstance(chall, TLSALPN01)
    assert chall.response(key).to_partial_json() == {}
    thumbprint = jose.b64encode(key.thumbprint()).decode()
    assert chall.validation(key) == hashlib.sha256(f"{TOKEN}.{thumbprint}".encode()).digest()


def test_challenge_certificate_names_only_the_domain_and_carries_the_digest() -> None:
    """The challenge certificate's one SAN is the name, its critical acmeIdentifier extension
    is the DER OCTET STRING of the digest, and the key is the certificate's."""
    digest = hashlib.sha256(b"key authorization").digest()
    chain_pem, key_pem = tls_alpn_cert("a.test", digest)
    cert = x509.load_pem_x509_certificate(chain_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.test"]
    ident = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert ident.critical
    assert ident.value.public_bytes() == b"\x04\x20" + digest
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert key.public_key() == cert.public_key()


def test_tls_alpn_01_accepts_names_and_refuses_wildcards() -> None:
    """With tls-alpn-01 plain names are accepted; a wildcard is UnsupportedChallenge."""
    assert check_names(ALPN, ["A.test"]) == ["a.test"]
    with pytest.raises(errors.UnsupportedChallenge):
        check_names(ALPN, ["*.a.test"])


def test_snapshot_carries_the_challenge_while_its_row_exists(service: Service) -> None:
    """Put: the applied snapshot and one built afresh carry the challenge, its key sealed in
    the store; removed: neither does, and no row is left."""
    chain_pem, key_pem = tls_alpn_cert("a.test", hashlib.sha256(b"x").digest())
    board = StoreChallenges(service.node)
    board.put("a.test", chain_pem, key_pem)
    expected = (ChallengeCert("a.test", chain_pem, key_pem),)
    assert service.applied_snapshot is not None
    assert service.applied_snapshot.challenges == expected
    assert _built(service) == expected
    with transaction(service.engine) as session:
        row = session.exec(select(AcmeChallenge)).one()
    assert key_pem.encode() not in row.key_sealed
    board.remove("a.test")
    assert service.applied_snapshot.challenges == ()
    assert _built(service) == ()
    with transaction(service.engine) as session:
        assert session.exec(select(AcmeChallenge)).all() == []


def test_stale_challenges_are_removed_and_fresh_ones_kept(service: Service) -> None:
    """clear_stale removes the challenges older than STALE_AFTER (a killed order's), keeps a
    fresh one, and changes nothing when none is stale."""
    board = StoreChallenges(service.node)
    for name in ("old.test", "new.test"):
        board.put(name, *tls_alpn_cert(name, hashlib.sha256(name.encode()).digest()))

    def age(change: Change) -> None:
        row = change.session.get(AcmeChallenge, "old.test")
        assert row is not None
        row.created_at = change.now - STALE_AFTER - dt.timedelta(seconds=1)
        change.session.add(row)

    service.node.changes.run(age, actor="test")
    clear_stale(service.node)
    assert [c.name for c in _built(service)] == ["new.test"]
    assert service.applied_snapshot is not None
    assert [c.name for c in service.applied_snapshot.challenges] == ["new.test"]
    revision = service.node.changes.revision
    clear_stale(service.node)
    assert service.node.changes.revision == revision
