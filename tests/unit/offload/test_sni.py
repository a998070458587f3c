"""SNI name matching rules."""

from __future__ import annotations

import pytest

from offload.sni import SniTable, name_matches


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("www.example.com", "www.example.com", True),
        ("www.example.com", "WWW.Example.COM.", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("*.example.com", ".example.com", False),
        ("www.example.com", "ww.example.com", False),
    ],
)
def test_name_matches(pattern: str, host: str, expected: bool) -> None:
    """Exact names match case-insensitively; a wildcard matches exactly one label."""
    assert name_matches(pattern, host) is expected


CERTS = [("wild", ["*.example.com"]), ("exact", ["www.example.com"]), ("other", ["x.test"])]


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("www.example.com", "exact"),
        ("api.example.com", "wild"),
        ("a.b.example.com", None),
        ("example.com", None),
        ("unknown.test", None),
        ("", None),
        (None, None),
    ],
)
def test_select(server_name: str | None, expected: str | None) -> None:
    """An exact match beats a wildcard listed earlier; no match or no SNI selects nothing."""
    assert SniTable(CERTS).lookup(server_name) == expected


def test_first_certificate_wins_a_tie() -> None:
    """Two certificates with the same name: the first listed is served."""
    table = SniTable([("first", ["a.example.com"]), ("second", ["a.example.com"])])
    assert table.lookup("a.example.com") == "first"
