"""The system trust store and its certifi fallback for systems that ship no roots."""

from __future__ import annotations

import logging
from pathlib import Path

import certifi
import pytest

from certwatch.pki import truststore, x509
from tests.certfactory import Pki, make_pki

FALLBACK_LOG = "the system trust store is empty"


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A root → intermediate PKI."""
    return make_pki("truststore test")


def test_empty_system_store_falls_back_to_certifi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty CA file, a missing one and an empty CA folder give certifi's roots, logged."""
    empty_file = tmp_path / "ca-certificates.crt"
    empty_file.write_text("")
    empty_dir = tmp_path / "certs"
    empty_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="certwatch.pki.truststore"):
        store = truststore.load_trust_store(
            [str(empty_file), str(tmp_path / "missing.pem"), None], [str(empty_dir)]
        )
    expected = x509.load_bundle(certifi.where())
    assert store.from_certifi and store.source == certifi.where()
    assert list(store.roots) == expected and len(expected) > 50
    messages = [r.getMessage() for r in caplog.records if FALLBACK_LOG in r.getMessage()]
    assert len(messages) == 1
    assert str(empty_file) in messages[0] and str(empty_dir) in messages[0]
    assert certifi.where() in messages[0] and f"({len(expected)} roots)" in messages[0]


def test_system_bundle_wins_over_certifi(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A CA file with roots is used as it is; certifi is not consulted and nothing is logged."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(x509.to_pem([pki.root.cert]))
    with caplog.at_level(logging.WARNING, logger="certwatch.pki.truststore"):
        store = truststore.load_trust_store([str(bundle)], [])
    assert store.roots == (pki.root.cert,) and store.source == str(bundle)
    assert not store.from_certifi and FALLBACK_LOG not in caplog.text


def test_ca_folder_is_used_when_no_ca_file_has_roots(tmp_path: Path, pki: Pki) -> None:
    """With an empty CA file, the roots of the CA folder are the system store."""
    empty_file = tmp_path / "empty.pem"
    empty_file.write_text("")
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "root.pem").write_text(x509.to_pem([pki.root.cert]))
    store = truststore.load_trust_store([str(empty_file)], [str(folder)])
    assert store.roots == (pki.root.cert,) and store.source == str(folder)
    assert not store.from_certifi


def test_no_roots_anywhere_is_empty_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When certifi's bundle is empty too, the store is empty and the log says so."""
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with caplog.at_level(logging.WARNING, logger="certwatch.pki.truststore"):
        store = truststore.load_trust_store([str(empty)], [], fallback_bundle=str(empty))
    assert store.roots == () and not store.from_certifi
    assert "no trusted roots" in caplog.text


def test_system_roots_log_the_fallback_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a system without roots, system_roots() is certifi's bundle and logs it only once."""
    empty_dir = tmp_path / "certs"
    empty_dir.mkdir()
    monkeypatch.setattr(
        truststore, "_system_paths", lambda: ([str(tmp_path / "none.pem")], [str(empty_dir)])
    )
    truststore.system_trust_store.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="certwatch.pki.truststore"):
            first = x509.system_roots()
            second = x509.system_roots()
    finally:
        truststore.system_trust_store.cache_clear()
    assert first == second == x509.load_bundle(certifi.where())
    assert sum(FALLBACK_LOG in r.getMessage() for r in caplog.records) == 1
