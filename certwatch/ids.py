"""Object identifiers: a type prefix and 16 hex digits (`cert-0123456789abcdef`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh random id with the given prefix."""
    return f"{prefix}-{secrets.token_hex(8)}"
