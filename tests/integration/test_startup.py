"""Start-up that explains itself: every configuration that cannot work is one line on stderr
and exit 2, from `certwatch serve` and from `certwatch config check`, before anything is
written to data_dir; a signal during start-up ends it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from certwatch.app.cli import main
from tests.integration.servers import ServeProcess
from tests.support import free_port


@contextmanager
def _taken_port() -> Iterator[int]:
    """A loopback port another process-like socket listens on (no SO_REUSEPORT)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@dataclass(frozen=True)
class Bad:
    """A configuration that cannot work: its TOML (given tmp_path and a taken port), the
    command line's extra arguments, and what the one line must name."""

    toml: Callable[[Path, int], str]
    names: str
    args: tuple[str, ...] = ()
    config_is: Callable[[Path], Path] | None = None


def _file(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


CASES = {
    "host without port": Bad(lambda t, p: '[api]\nlisten = "localhost"\n', "api.listen"),
    "port not a number": Bad(lambda t, p: '[api]\nlisten = "127.0.0.1:abc"\n', "api.listen"),
    "port out of range": Bad(lambda t, p: '[api]\nlisten = "127.0.0.1:99999"\n', "api.listen"),
    "api port taken": Bad(lambda t, p: f'[api]\nlisten = "127.0.0.1:{p}"\n', "api.listen"),
    "api host unknown": Bad(
        lambda t, p: '[api]\nlisten = "no-such-host.invalid:9180"\n', "api.listen"
    ),
    "public api without token": Bad(lambda t, p: '[api]\nlisten = "0.0.0.0:9180"\n', "api.token"),
    "missing trusted CA file": Bad(
        lambda t, p: f'[scan]\ntrusted_ca_file = "{t / "absent.pem"}"\n', "scan.trusted_ca_file"
    ),
    "trusted CA file not PEM": Bad(
        lambda t, p: f'[scan]\ntrusted_ca_file = "{_file(t, "junk.pem", "junk")}"\n',
        "scan.trusted_ca_file",
    ),
    "bad scan target": Bad(lambda t, p: '[scan]\ntargets = ["example.com"]\n', "scan.targets"),
    "bad duration": Bad(lambda t, p: '[scan]\ninterval = "often"\n', "scan.interval"),
    "alert URL apprise cannot parse": Bad(
        lambda t, p: '[alerts]\nurls = ["notascheme://x"]\n', "alerts.urls"
    ),
    "unreachable store": Bad(
        lambda t, p: f'[store]\nurl = "postgresql://u:pw@127.0.0.1:{p}/db"\n', "store.url"
    ),
    "not a store URL": Bad(lambda t, p: '[store]\nurl = "garbage"\n', "store.url"),
    "data_dir under a file": Bad(
        lambda t, p: f'data_dir = "{_file(t, "plain", "x")}/data"\n', "data_dir"
    ),
    "key file others may read": Bad(
        lambda t, p: f'[secrets]\nkey_file = "{_file(t, "shared.key", "k", 0o644)}"\n',
        "secrets.key_file",
    ),
    "key file folder under a file": Bad(
        lambda t, p: f'[secrets]\nkey_file = "{_file(t, "plain2", "x")}/s.key"\n',
        "secrets.key_file",
    ),
    "unknown key": Bad(lambda t, p: "[scan]\nintervall = 5\n", "scan.intervall"),
    "demo port taken": Bad(lambda t, p: "", "--demo-port", ("--demo", "--demo-port", "{port}")),
    "demo without data plane": Bad(
        lambda t, p: "[proxy]\nworkers = 0\n", "proxy.workers", ("--demo",)
    ),
    "config names a folder": Bad(lambda t, p: "", "config file", config_is=lambda t: t),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_configuration_is_one_line_and_exit_2(
    case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` with this configuration exits 2 with one line on stderr naming the key, no
    traceback, data_dir untouched; `config check` says the same and exits 2."""
    data_dir = tmp_path / "data"
    with _taken_port() as port:
        body = case.toml(tmp_path, port)
        if "data_dir" not in body:
            body = f'data_dir = "{data_dir}"\n' + body
        if "[api]" not in body:
            body += f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
        config = tmp_path / "certwatch.toml"
        config.write_text(body)
        if case.config_is is not None:
            config = case.config_is(tmp_path)
        args = [a.format(port=port) for a in case.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTWATCH_")}
        result = subprocess.run(
            [sys.executable, "-m", "certwatch.app.cli", "serve", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        lines = result.stderr.splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and case.names in lines[0], result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert not data_dir.exists(), sorted(p.name for p in data_dir.iterdir())
        if not args:
            assert main(["config", "check", "--config", str(config)]) == 2
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1 and case.names in err[0]
            assert not data_dir.exists()


def test_config_check_accepts_a_working_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config check` on a configuration that works exits 0, says so, and creates nothing."""
    data_dir = tmp_path / "data"
    config = tmp_path / "certwatch.toml"
    config.write_text(f'data_dir = "{data_dir}"\n[api]\nlisten = "127.0.0.1:{free_port()}"\n')
    assert main(["config", "check", "--config", str(config)]) == 0
    assert "configuration OK" in capsys.readouterr().out
    assert not data_dir.exists()


def _group_members(leader: int) -> list[int]:
    """The processes other than `leader` in the process group `leader` leads, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, group = int(stat.parent.name), int(fields[2])
            if group == leader and pid != leader:
                found.append(pid)
    return found


@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_signal_during_start_up_exits_cleanly(tmp_path: Path, delay: float) -> None:
    """SIGTERM to the process group while the proxy workers are still starting ends the start
    with exit 0 and no traceback."""
    serve = ServeProcess(tmp_path, workers=2)
    serve.start(wait=False, new_session=True)
    assert serve.process is not None
    try:
        deadline = time.monotonic() + 60
        while (
            not _group_members(serve.process.pid)
            and serve.process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert _group_members(serve.process.pid), f"no proxy worker was spawned: {serve.output()}"
        time.sleep(delay)
        os.killpg(serve.process.pid, signal.SIGTERM)
        code = serve.stop(sig=None, limit=60)
    finally:
        serve.kill_group()
    assert code == 0, serve.output()
    assert "Traceback" not in serve.output()
