"""SNI name matching: exact names beat `*.domain` wildcards, which match exactly one label.

Pure functions shared by the proxy (per handshake) and the control plane (probes, checks).
Names compare case-insensitively; a trailing dot on the client's name is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def name_matches(pattern: str, host: str) -> bool:
    """True when `host` is `pattern`, or `pattern` is `*.rest` and `host` is `label.rest`."""
    pattern, host = _norm(pattern), _norm(host)
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == host


class SniTable(Generic[T]):
    """Which certificate serves a client's SNI name: exact names first, then one-label
    wildcards, the first listed certificate winning a tie; two dict probes per lookup."""

    __slots__ = ("_exact", "_wild")

    def __init__(self, names_by_cert: Sequence[tuple[T, Iterable[str]]]) -> None:
        self._exact: dict[str, T] = {}
        self._wild: dict[str, T] = {}
        for cert, names in names_by_cert:
            for name in names:
                name = _norm(name)
                if name.startswith("*."):
                    self._wild.setdefault(name[2:], cert)
                else:
                    self._exact.setdefault(name, cert)

    def lookup(self, server_name: str | None) -> T | None:
        """The certificate for `server_name`, or None (serve the default)."""
        if not server_name:
            return None
        host = _norm(server_name)
        found = self._exact.get(host)
        if found is not None:
            return found
        label, dot, rest = host.partition(".")
        if label and dot:
            return self._wild.get(rest)
        return None

