"""The console's session and CSRF tokens: signed values, checked in constant time.

A session cookie is `<nonce>.<signature>`; the CSRF token of a session is the signature of
`csrf:<nonce>`. Both are signed with a key made when the console starts (a restart ends
every session). With `api.token` set, a session is issued only to who gives the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "certwatch_console"


class Sessions:
    """Issues and checks session cookies and their CSRF tokens."""

    def __init__(self, token: str | None) -> None:
        self._key = secrets.token_bytes(32)
        self._token = token.encode() if token else None

    @property
    def needs_login(self) -> bool:
        """Whether a person must give the API token before using the console."""
        return self._token is not None

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the API token."""
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new session cookie value."""
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, cookie: str | None) -> bool:
        """Whether `cookie` is a session this console issued."""
        nonce, _, signature = (cookie or "").partition(".")
        return bool(nonce) and hmac.compare_digest(signature, self._sign(nonce))

    def csrf(self, cookie: str) -> str:
        """The CSRF token every changing form of this session carries."""
        return self._sign(f"csrf:{cookie.partition('.')[0]}")

    def csrf_matches(self, cookie: str, given: str) -> bool:
        """Whether a form's CSRF token is this session's."""
        return hmac.compare_digest(given, self.csrf(cookie))
