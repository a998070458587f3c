"""Logs a service manager can use: levels, the record's own time, structured JSON fields, and
a drain that says what it waits for."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from certwatch.app import logs
from tests.integration.servers import ServeProcess
from tests.support import free_port

MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_json_line_has_the_records_time_and_its_fields() -> None:
    """A JSON line carries the time the record was made (not formatted), to the millisecond,
    and every `extra=` field as its own key."""
    record = logging.LogRecord("certwatch.x", logging.INFO, __file__, 1, "swap %s", ("a",), None)
    record.listener_id = "lsn-0123456789abcdef"
    record.created = 1_700_000_000.1234
    time.sleep(0.01)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["time"] == "2023-11-14T22:13:20.123Z"
    assert entry["message"] == "swap a" and entry["listener_id"] == "lsn-0123456789abcdef"


def test_level_is_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    """`setup` with a level drops records below it."""
    logs.setup("text", "warning")
    logging.getLogger("certwatch.test").info("hidden")
    logging.getLogger("certwatch.test").warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err
    logs.setup("text", "info")


def test_serve_logs_json_with_fields_and_the_drain(tmp_path: Path) -> None:
    """`serve --demo --log-format json --log-level debug`: every line is JSON with a
    millisecond time, the demo line names its listener_id, and the drain says how many
    connections it waits for and for how long."""
    serve = ServeProcess(tmp_path, drain_timeout=5)
    port = free_port()
    serve.start("--demo", "--demo-port", str(port), "--log-format", "json", "--log-level", "debug")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "data" / "demo" / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="demo.localhost") as tls,
    ):
        tls.sendall(b"x")
        assert tls.recv(1) == b"x"
        assert serve.process is not None
        serve.process.terminate()
        time.sleep(1.5)
    assert serve.stop(sig=None) == 0
    entries = [json.loads(line) for line in serve.output().splitlines() if line.startswith("{")]
    assert entries and all(MILLISECONDS.match(e["time"]) for e in entries)
    assert any(e.get("listener_id", "").startswith("lsn-") for e in entries)
    (drain,) = [e for e in entries if "open_connections" in e]
    assert drain["open_connections"] == 1 and drain["drain_timeout"] == 5
    assert any("drain_seconds" in e for e in entries)
