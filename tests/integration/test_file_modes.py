"""Nothing secret left readable: staging leftovers, the secrets key, the SQLite files."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from certwatch.app.service import Service
from certwatch.config import Config
from certwatch.pki.pem import split_pem
from certwatch.private_files import UnsafeFileMode
from certwatch.rotation.intake import intake
from tests.certfactory import Pki, make_pki
from tests.integration.servers import ServeProcess

NAME = "files.example.com"


@pytest.fixture(params=[0o022], ids=["umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this process umask (the usual 0o022 unless parametrised), restored
    after."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[tuple[Service, Pki]]:
    """A service without a data plane that trusts a test root, and its staging directory."""
    pki = make_pki("file modes")
    service = Service(Config(data_dir=str(tmp_path / "data")))
    service.call(
        "UploadCertificate",
        {"CertificateName": "root", "CertificateType": "Ca", "Certificate": pki.root_pem},
    )
    service.config.staging_dir.mkdir()
    yield service, pki
    service.close()


def _mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def _drop(directory: Path, files: dict[str, str]) -> None:
    """Write the files into the staging directory as a minute old (settled)."""
    past = time.time() - 60
    for name, text in files.items():
        (directory / name).write_text(text)
        os.utime(directory / name, (past, past))


def _assert_private_and_keyless(folder: Path) -> None:
    """The folder is 0700 and every file in it 0600 with no private key block."""
    assert _mode(folder) == 0o700
    for path in folder.iterdir():
        assert _mode(path) == 0o600, path.name
        assert "PRIVATE KEY" not in path.read_text(), path.name


def test_a_processed_pair_keeps_its_certificates_only(
    umask: int, staging: tuple[Service, Pki]
) -> None:
    """A staged crt/key pair ends in processed/ at 0600 in a 0700 folder: the chain kept, the
    key removed, and the .reason says so."""
    service, pki = staging
    leaf = pki.leaf(NAME, days=90)
    _drop(service.config.staging_dir, {"site.crt": leaf.chain_pem, "site.key": leaf.key_pem})

    intake(service.node)

    processed = service.config.staging_dir / "processed"
    names = {p.name for p in processed.iterdir()}
    assert names == {"site.crt", "site.crt.reason", "site.key", "site.key.reason"}
    _assert_private_and_keyless(processed)
    assert (processed / "site.crt").read_text() == split_pem(leaf.chain_pem)[0]
    assert (processed / "site.key").read_text() == ""
    reason = (processed / "site.key.reason").read_text().splitlines()
    assert reason[0].startswith("Pending: staged as stg-")
    assert reason[1] == "private key removed from this copy (stored encrypted when staged)"


def test_a_rejected_combined_pem_keeps_its_certificates_only(
    umask: int, staging: tuple[Service, Pki]
) -> None:
    """A rejected PEM with chain and key ends in rejected/ (tightened to 0700 though it was
    0755) at 0600 with its certificates and without its key."""
    service, pki = staging
    weak = pki.leaf(NAME, days=90, key="rsa1024")
    rejected = service.config.staging_dir / "rejected"
    rejected.mkdir(mode=0o755)
    _drop(service.config.staging_dir, {"weak.pem": weak.chain_pem + weak.key_pem})

    intake(service.node)

    assert {p.name for p in rejected.iterdir()} == {"weak.pem", "weak.pem.reason"}
    _assert_private_and_keyless(rejected)
    assert split_pem((rejected / "weak.pem").read_text())[0] == split_pem(weak.chain_pem)[0]
    reason = (rejected / "weak.pem.reason").read_text().splitlines()
    assert "weak key" in reason[0]
    assert reason[1] == "private key removed from this copy (not kept)"


@pytest.mark.parametrize(
    ("mode", "access"),
    [
        (0o644, "readable"),
        (0o640, "readable"),
        (0o602, "writable"),
        (0o666, "readable and writable"),
    ],
    ids=["0644", "0640", "0602", "0666"],
)
def test_a_shared_secrets_key_is_refused(tmp_path: Path, mode: int, access: str) -> None:
    """A secrets key its group or others may read or write stops the service, naming the
    file, its mode and the fix."""
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(mode)

    with pytest.raises(UnsafeFileMode) as refused:
        Service(Config(data_dir=str(tmp_path)))

    assert str(refused.value) == (
        f"secrets.key_file {key_file} is mode {mode:04o}: {access} by others; chmod 600 it"
    )


def test_serve_refuses_a_shared_secrets_key_in_one_line(umask: int, tmp_path: Path) -> None:
    """`certwatch serve` with a 0644 secrets key exits 2 with one log line and no traceback."""
    serve = ServeProcess(tmp_path, workers=1)
    key_file = tmp_path / "data" / "secrets.key"
    key_file.parent.mkdir()
    key_file.write_bytes(Fernet.generate_key())
    assert _mode(key_file) == 0o644

    try:
        assert serve.start(wait=False, new_session=True).stop(sig=None, limit=60) == 2
    finally:
        serve.kill_group()

    lines = serve.output().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert lines[0].endswith(
        f"secrets.key_file {key_file} is mode 0644: readable by others; chmod 600 it"
    )


@pytest.mark.parametrize("umask", [0o022, 0o277], indirect=True, ids=["umask022", "umask277"])
def test_store_files_are_private(umask: int, tmp_path: Path) -> None:
    """A new data_dir is 0700 and the secrets key, SQLite file, WAL and SHM in it are 0600
    after the service has written, whatever the umask."""
    data_dir = tmp_path / "new" / "data"
    service = Service(Config(data_dir=str(data_dir)))
    try:
        service.call("CreateLoadBalancer", {"LoadBalancerName": "lb"})
        files = ["secrets.key", "certwatch.db", "certwatch.db-wal", "certwatch.db-shm"]
        assert {name: _mode(data_dir / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        service.close()
    assert _mode(data_dir) == _mode(data_dir.parent) == 0o700


def test_a_key_only_pem_is_rejected_and_the_next_drop_is_staged(
    staging: tuple[Service, Pki],
) -> None:
    """A .pem holding only a private key goes to rejected/ with its reason, and a good pair
    sorted after it is staged in the same scan (it no longer blocks the files after it)."""
    service, pki = staging
    leaf = pki.leaf(NAME, days=90)
    _drop(
        service.config.staging_dir,
        {"a-key-only.pem": leaf.key_pem, "b-site.crt": leaf.chain_pem, "b-site.key": leaf.key_pem},
    )

    intake(service.node)

    rejected = service.config.staging_dir / "rejected"
    reason = (rejected / "a-key-only.pem.reason").read_text()
    assert reason.startswith("InvalidCertificate: no certificate in the file")
    assert (service.config.staging_dir / "processed" / "b-site.crt").is_file()
    staged = service.call("ListStagedCertificates")["StagedCertificates"]
    assert [s["Status"] for s in staged] == ["Pending"]
