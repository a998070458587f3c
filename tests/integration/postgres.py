"""A PostgreSQL cluster of one test's own, which the test may stop, start and restart.

The suite's shared server (`CERTWATCH_TEST_PG_URL`) must stay up for the other tests that
run at the same time; a test of store outages and restarts gets a cluster of its own: the
same `initdb` / `pg_ctl` as `.ci/start-postgres.sh`, on a free loopback port.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import require
from tests.support import free_port


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]) if found and (Path(found[-1]) / "initdb").exists() else None


class Postgres:
    """initdb into a new directory, then start, stop and restart on a free port."""

    def __init__(self) -> None:
        binaries = _bin()
        require(binaries is not None, "PostgreSQL's initdb and pg_ctl are not installed")
        assert binaries is not None
        self._bin = binaries
        self.port = free_port()
        self._data = Path(tempfile.mkdtemp(prefix="certwatch-pg."))
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(self._data, "postgres")
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100"
        )
        self._ctl("start", "-l", str(self._data / "log"), "-o", options)

    def stop(self) -> None:
        """Stop it at once, ending every connection (an outage)."""
        self._ctl("stop", "-m", "immediate")

    def restart(self) -> None:
        """Stop it (ending every connection) and start it again."""
        self._ctl("restart", "-m", "fast", "-l", str(self._data / "log"))

    def remove(self) -> None:
        """Stop it if it runs, and delete its files."""
        subprocess.run(
            self._command("pg_ctl", "-D", str(self._data), "-m", "immediate", "stop"),
            capture_output=True, cwd="/", check=False, timeout=60,
        )
        shutil.rmtree(self._data, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self._data), "-w", *args)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            self._command(tool, *args), capture_output=True, cwd="/", check=True, timeout=60
        )

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self._bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command
