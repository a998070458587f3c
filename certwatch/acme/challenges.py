"""Answering challenges: http-01 from a small responder, dns-01 through the operator's hook.

The responder serves `GET /.well-known/acme-challenge/<token>` for the tokens of the
authorizations in progress and answers 404 to everything else.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from certwatch.config import split_address

log = logging.getLogger(__name__)
PREFIX = "/.well-known/acme-challenge/"
HOOK_TIMEOUT = 120.0


class ChallengeError(Exception):
    """A challenge could not be put up (the dns hook failed)."""


class HttpResponder:
    """The http-01 responder on `acme.http_listen`."""

    def __init__(self, listen: str) -> None:
        host, port = split_address(listen)
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.removeprefix(PREFIX) if self.path.startswith(PREFIX) else ""
                body = responder.validation(token)
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Type", "text/plain")
                payload = (body or "not found").encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http-01 responder: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HttpResponder:
        """Start answering."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def validation(self, token: str) -> str | None:
        """The key authorization for `token`, while its challenge is up."""
        with self._lock:
            return self._tokens.get(token) if token and "/" not in token else None

    def put(self, token: str, validation: str) -> None:
        """Answer `token` from now on."""
        with self._lock:
            self._tokens[token] = validation

    def drop(self, token: str) -> None:
        """Stop answering `token`."""
        with self._lock:
            self._tokens.pop(token, None)


def run_hook(hook: str, verb: str, name: str, value: str) -> None:
    """`HOOK set|unset _acme-challenge.NAME VALUE`; ChallengeError unless it exits 0."""
    try:
        done = subprocess.run(
            [hook, verb, name, value], capture_output=True, timeout=HOOK_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChallengeError(f"acme.dns_hook {verb} {name}: {exc}") from exc
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise ChallengeError(
            f"acme.dns_hook {verb} {name} exited {done.returncode}"
            + (f": {said[-1]}" if said else "")
        )
