"""Handshake failure reasons as exported in `handshake_failures_total`."""

from __future__ import annotations

import ssl

import pytest

from offload.proxy import failure_reason


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionAbortedError(103, "aborted"), "tls_error"),
        (TimeoutError(), "timeout"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "client_cert"),
        (ConnectionResetError(104, "reset"), "tls_error"),
        (ssl.SSLError(1, "wrong version number"), "tls_error"),
    ],
)
def test_failure_reason(exc: BaseException, reason: str) -> None:
    """Timeouts, client certificate rejections and other TLS errors get their own label."""
    assert failure_reason(exc) == reason
