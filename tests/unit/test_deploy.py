"""deploy/certwatch.service: a hardened unit that systemd scores 2.0 or better."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import require

UNIT = Path(__file__).parents[2] / "deploy" / "certwatch.service"
MOST_EXPOSED = 2.0


def _settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_sets_limits_umask_and_state_directory() -> None:
    """The unit raises the descriptor limit, creates files 0600 and gets its own state folder."""
    settings = _settings()
    assert int(settings["LimitNOFILE"][0]) >= 65536
    assert settings["UMask"] == ["0077"]
    assert settings["StateDirectory"] == ["certwatch"]
    assert settings["WorkingDirectory"] == ["/var/lib/certwatch"]


def test_systemd_scores_the_unit_at_most_2() -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure 2.0 or less."""
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze is not installed (Debian: systemd)")
    assert tool is not None
    result = subprocess.run(
        [tool, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= MOST_EXPOSED, result.stdout
