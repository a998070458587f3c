"""Configuration: TOML, environment overrides, durations, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from certwatch.config import ConfigError, load_config, parse_duration


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
    assert config.scan.interval == 90 and config.scan.targets == ["a:443"]
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
