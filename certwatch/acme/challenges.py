"""Answering challenges: http-01 from a small responder, dns-01 through the operator's hook,
tls-alpn-01 (RFC 8737) with a challenge certificate that the offload proxy serves.

The responder serves `GET /.well-known/acme-challenge/<token>` for the tokens of the
authorizations in progress and answers 404 to everything else. The `acme` library dropped
its tls-alpn-01 types (in 3.0), so `TLSALPN01` is defined here, registered with its
challenge types as the library registers its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import josepy as jose
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwatch import clock
from certwatch.config import split_address

log = logging.getLogger(__name__)
PREFIX = "/.well-known/acme-challenge/"
HOOK_TIMEOUT = 120.0
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
"""id-pe-acmeIdentifier: the critical extension holding the key authorization's digest."""
CHALLENGE_CERT_DAYS = 7


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


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a tls-alpn-01 challenge (an empty JSON object on the wire)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """An ACME tls-alpn-01 challenge (RFC 8737)."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **kwargs: Any) -> bytes:
        """The SHA-256 digest of the key authorization, which the challenge certificate
        carries in its acmeIdentifier extension."""
        return hashlib.sha256(self.key_authorization(account_key).encode()).digest()


def tls_alpn_cert(domain: str, digest: bytes) -> tuple[str, str]:
    """The self-signed challenge certificate for `domain` (its only name, as a SAN) carrying
    `digest` in the critical acmeIdentifier extension, and its fresh key; both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"acme challenge {domain}")])
    now = clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CHALLENGE_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(
            # DER of OCTET STRING (SIZE (32)): tag 0x04, length 0x20, then the digest.
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
