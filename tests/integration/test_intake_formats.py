"""Staging-folder intake of PKCS#12 files and DER leaves, and the PKCS#12 password settings."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certwatch.app import preflight
from certwatch.app.service import Service
from certwatch.config import Config, ConfigError, RotationConfig
from certwatch.rotation.intake import PFX_EMPTIED, PFX_KEPT, intake
from tests.certfactory import Issued, Pki, make_pki

NAME = "drop.example.com"
PASSWORD = "drop-secret"


def _service(tmp_path: Path, pki: Pki, **rotation: Any) -> Service:
    """A service without a data plane that trusts `pki`'s root, its staging folder made."""
    config = Config(data_dir=str(tmp_path / "data"), rotation=RotationConfig(**rotation))
    service = Service(config)
    service.call(
        "UploadCertificate",
        {"CertificateName": "root", "CertificateType": "Ca", "Certificate": pki.root_pem},
    )
    service.config.staging_dir.mkdir()
    return service


@pytest.fixture
def pki() -> Pki:
    """A fresh test PKI."""
    return make_pki("intake")


@pytest.fixture
def service(tmp_path: Path, pki: Pki) -> Iterator[Service]:
    """The service with `rotation.pkcs12_password` set."""
    made = _service(tmp_path, pki, pkcs12_password=PASSWORD)
    yield made
    made.close()


def _pfx(leaf: Issued, extra: list[x509.Certificate], password: str) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"drop", leaf.key, leaf.cert, extra,
        serialization.BestAvailableEncryption(password.encode()),
    )


def _drop(directory: Path, files: dict[str, bytes]) -> None:
    """Write the files into the staging folder as a minute old (settled)."""
    past = time.time() - 60
    for name, data in files.items():
        (directory / name).write_bytes(data)
        os.utime(directory / name, (past, past))


def _staged(service: Service) -> list[dict[str, Any]]:
    return list(service.call("ListStagedCertificates")["StagedCertificates"])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_pfx_is_staged_and_only_its_certificates_are_kept(service: Service, pki: Pki) -> None:
    """A .pfx opened with rotation.pkcs12_password is staged; processed/ keeps its
    certificates as PEM at 0600, no key and no PKCS#12, and its .reason says so."""
    leaf = pki.leaf(NAME, days=90)
    staging = service.config.staging_dir
    _drop(staging, {"site.pfx": _pfx(leaf, [pki.intermediate.cert], PASSWORD)})

    intake(service.node)

    [entry] = _staged(service)
    assert entry["Status"] == "Pending"
    kept = staging / "processed" / "site.pfx"
    certs = x509.load_pem_x509_certificates(kept.read_bytes())
    assert certs == [leaf.cert, pki.intermediate.cert]
    assert b"PRIVATE KEY" not in kept.read_bytes() and _mode(kept) == 0o600
    reason = (staging / "processed" / "site.pfx.reason").read_text().splitlines()
    assert reason[0].startswith("Pending: staged as stg-") and reason[1] == PFX_KEPT
    assert not (staging / "site.pfx").exists()


def test_a_pfx_the_password_does_not_open_is_rejected_and_emptied(
    service: Service, pki: Pki
) -> None:
    """A .p12 with another password goes to rejected/ with InvalidPassword, emptied (it held
    the key), and the next drop is still staged."""
    staging = service.config.staging_dir
    good = pki.leaf(NAME, days=90)
    _drop(
        staging,
        {
            "a-other.p12": _pfx(pki.leaf(NAME, days=80), [], "not the configured one"),
            "b-good.p12": _pfx(good, [pki.intermediate.cert], PASSWORD),
        },
    )

    intake(service.node)

    rejected = staging / "rejected"
    assert (rejected / "a-other.p12").read_bytes() == b""
    reason = (rejected / "a-other.p12.reason").read_text()
    assert reason.startswith("InvalidPassword:") and PFX_EMPTIED in reason
    assert PASSWORD not in reason
    assert [s["Status"] for s in _staged(service)] == ["Pending"]


def test_the_password_file_opens_a_pfx(tmp_path: Path, pki: Pki) -> None:
    """rotation.pkcs12_password_file's first line is the password intake uses."""
    secret = tmp_path / "pfx-password"
    secret.write_text(PASSWORD + "\nignored\n")
    secret.chmod(0o600)
    service = _service(tmp_path, pki, pkcs12_password_file=str(secret))
    try:
        preflight.check(service.config, "proxy")
        blob = _pfx(pki.leaf(NAME, days=90), [pki.intermediate.cert], PASSWORD)
        _drop(service.config.staging_dir, {"site.pfx": blob})
        intake(service.node)
        assert [s["Status"] for s in _staged(service)] == ["Pending"]
    finally:
        service.close()


def test_der_leaves_with_their_keys_are_staged(service: Service, pki: Pki) -> None:
    """A .der leaf with a DER name.key and a DER .cer with a PEM name.key are staged (their
    intermediate known as a Ca certificate); the leaves are kept, the keys emptied; a .der
    without its key waits."""
    service.call(
        "UploadCertificate",
        {
            "CertificateName": "ica",
            "CertificateType": "Ca",
            "Certificate": pki.intermediate.cert_pem,
        },
    )
    staging = service.config.staging_dir
    first, second, lonely = (pki.leaf(NAME, days=d) for d in (90, 100, 110))
    der_key = first.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _drop(
        staging,
        {
            "first.der": first.cert.public_bytes(serialization.Encoding.DER),
            "first.key": der_key,
            "second.cer": second.cert.public_bytes(serialization.Encoding.DER),
            "second.key": second.key_pem.encode(),
            "lonely.der": lonely.cert.public_bytes(serialization.Encoding.DER),
        },
    )

    intake(service.node)

    processed = staging / "processed"
    assert {p.name for p in processed.iterdir() if not p.name.endswith(".reason")} == {
        "first.der", "first.key", "second.cer", "second.key",
    }
    assert (processed / "first.der").read_bytes() == first.cert.public_bytes(
        serialization.Encoding.DER
    )
    assert (processed / "first.key").read_bytes() == b""
    assert (processed / "second.key").read_bytes() == b""
    assert [p.name for p in staging.iterdir() if p.is_file()] == ["lonely.der"]
    assert sorted(s["Status"] for s in _staged(service)) == ["Pending", "Pending"]


def test_a_half_written_pfx_waits(service: Service, pki: Pki) -> None:
    """A PKCS#12 file shorter than its DER header says is left where it is."""
    blob = _pfx(pki.leaf(NAME, days=90), [], PASSWORD)
    _drop(service.config.staging_dir, {"partial.pfx": blob[: len(blob) // 2]})
    intake(service.node)
    assert (service.config.staging_dir / "partial.pfx").exists()
    assert _staged(service) == []


def test_both_password_settings_are_refused() -> None:
    """pkcs12_password and pkcs12_password_file together are a configuration error."""
    with pytest.raises(ValueError, match="not both"):
        RotationConfig(pkcs12_password="a", pkcs12_password_file="/x")


@pytest.mark.parametrize(("mode", "why"), [(None, "not found"), (0o644, "readable")])
def test_preflight_names_a_missing_or_shared_password_file(
    tmp_path: Path, mode: int | None, why: str
) -> None:
    """Start-up refuses a pkcs12_password_file that is missing or readable by others."""
    secret = tmp_path / "pw"
    if mode is not None:
        secret.write_text("x\n")
        secret.chmod(mode)
    config = Config(
        data_dir=str(tmp_path / "data"),
        rotation=RotationConfig(pkcs12_password_file=str(secret)),
    )
    with pytest.raises(ConfigError, match="rotation.pkcs12_password_file") as caught:
        preflight.check(config, "proxy")
    assert why in str(caught.value)
