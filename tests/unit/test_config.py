"""Configuration: TOML, environment overrides, durations, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certwatch.config import ConfigError, ScanConfig, load_config, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("45", 45.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Durations are seconds or unit strings."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "15x", "-5", "1h 30m", True, None])
def test_bad_durations(text: object) -> None:
    """Anything else is refused."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults() -> None:
    """With nothing given, the SPEC's defaults apply."""
    config = load_config(env={})
    assert config.api.listen == "127.0.0.1:9180"
    assert config.scan.interval == 3600
    assert config.alerts.thresholds_days == [30, 7, 1]
    assert (config.rotation.auto, config.rotation.before_days) == (True, 30)
    assert config.proxy.drain_timeout == 30 and config.proxy.reload_interval == 2
    assert (config.proxy.handshake_timeout, config.proxy.connect_timeout) == (10, 5)
    assert config.store_url.startswith("sqlite:///") and config.store_url.endswith("certwatch.db")
    assert config.proxy_workers >= 1


def test_file_then_environment(tmp_path: Path) -> None:
    """TOML values are read and CERTWATCH_<SECTION>_<KEY> variables override them."""
    path = tmp_path / "c.toml"
    path.write_text(
        'data_dir = "/srv/cw"\n[scan]\ninterval = "15m"\ntargets = ["a:443"]\n'
        '[alerts]\nurls = ["json://x"]\n'
    )
    config = load_config(
        path,
        env={
            "CERTWATCH_SCAN_INTERVAL": "90s",
            "CERTWATCH_ALERTS_THRESHOLDS_DAYS": "[14, 3]",
            "CERTWATCH_ROTATION_AUTO": "false",
            "CERTWATCH_DATA_DIR": "/var/lib/cw",
        },
    )
    assert config.scan.interval == 90 and [t.address for t in config.scan.targets] == ["a:443"]
    assert config.alerts.thresholds_days == [14, 3] and config.alerts.urls == ["json://x"]
    assert config.rotation.auto is False
    assert config.data_dir == "/var/lib/cw"


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ('[scan]\ninterval = "soon"\n', {}, "scan.interval"),
        ("[scan]\nintervall = 5\n", {}, "scan.intervall"),
        ("[proxy]\nworkers = -1\n", {}, "proxy.workers"),
        ("", {"CERTWATCH_ROTATION_BEFORE_DAYS": "many"}, "rotation.before_days"),
        ("", {"CERTWATCH_NOPE_THING": "1"}, "CERTWATCH_NOPE_THING"),
        ("[scan\n", {}, "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, toml: str, env: dict[str, str], named: str) -> None:
    """A bad file or variable is a ConfigError that names what is wrong."""
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(path, env=env)


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is a clear error."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})


def test_cli_and_test_variables_are_not_config() -> None:
    """The CLI's CERTWATCH_API_URL and CERTWATCH_TEST_* variables do not trouble the service."""
    config = load_config(env={"CERTWATCH_API_URL": "http://x:1", "CERTWATCH_TEST_PG_URL": "pg://"})
    assert config.api.listen == "127.0.0.1:9180"


def test_scan_targets_as_strings_and_tables() -> None:
    """`scan.targets` takes `host:port[/name]` strings and tables with their own thresholds."""
    config = ScanConfig(
        targets=[
            "a.test:443",
            "b.test:443/",
            "[::1]:8443/v6.test",
            {"address": "c.test:8443", "server_name": "api.c.test", "thresholds_days": [60, 14]},
        ]
    )
    seen = [(t.address, t.server_name, t.thresholds_days) for t in config.targets]
    assert seen == [
        ("a.test:443", None, None),
        ("b.test:443", "", None),
        ("[::1]:8443", "v6.test", None),
        ("c.test:8443", "api.c.test", [60, 14]),
    ]
    assert (config.targets[2].host, config.targets[2].port) == ("::1", 8443)


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("example.com", "has no port"),
        ("example.com:99999", "outside 1-65535"),
        ({"address": "a.test:443", "thresholds_days": []}, "at least 1 item"),
        ({"address": "a.test:443", "thresholds_days": [-1]}, "greater than or equal to 0"),
        ({"address": "a.test:443", "sni": "x"}, "Extra inputs are not permitted"),
        ({"server_name": "x"}, "Field required"),
    ],
)
def test_bad_scan_targets_are_refused_naming_the_entry(target: object, named: str) -> None:
    """A bad target, string or table, is one error naming `scan.targets.N` and why."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"CERTWATCH_SCAN_TARGETS": json.dumps([target])})
    assert "scan.targets.0" in str(caught.value) and named in str(caught.value)
