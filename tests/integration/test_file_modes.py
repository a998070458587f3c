"""Nothing secret left readable: the secrets key, the SQLite files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from certwatch.config import Config
from certwatch.private_files import UnsafeFileMode
from certwatch.service import Service
from tests.integration.servers import ServeProcess


@pytest.fixture(params=[0o022], ids=["umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this process umask (the usual 0o022 unless parametrised), restored
    after."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


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
