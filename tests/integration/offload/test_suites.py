"""TLS 1.3 suites per policy, as `openssl s_client -ciphersuites` negotiates them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from offload.spec import Backend
from offload.workers import ProxyControl
from tests.certfactory import Pki
from tests.conftest import require
from tests.integration.offload.conftest import listener, snapshot

STRICT_WITH_1_3 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)


def _negotiated(port: int, suite: str) -> str | None:
    """The suite `openssl s_client` offering only `suite` gets, or None when refused."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
         "-ciphersuites", suite],
        input=b"", capture_output=True, timeout=10, check=False,
    )
    for line in done.stdout.decode().splitlines():
        if line.startswith("New, TLSv1.3, Cipher is "):
            return line.rsplit(" ", 1)[1]
    return None


@pytest.fixture(scope="module", autouse=True)
def _openssl() -> None:
    require(shutil.which("openssl") is not None, "the openssl command is not installed")


@pytest.mark.parametrize("suite", [s for s in STRICT_WITH_1_3 if s.startswith("TLS_")])
def test_every_suite_of_the_policy_is_negotiated(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...], suite: str
) -> None:
    """Each TLS 1.3 suite tls_cipher_policy_1_2_strict_with_1_3 lists, CCM ones included,
    is accepted when a client offers only it."""
    spec = listener(pki.leaf("suites.example.com"), backends, ciphers=STRICT_WITH_1_3)
    control.apply(snapshot(spec))
    assert _negotiated(spec.port, suite) == suite


def test_a_suite_outside_the_policy_is_refused(
    control: ProxyControl, pki: Pki, backends: tuple[Backend, ...]
) -> None:
    """A policy with only TLS_AES_128_CCM_SHA256 refuses a client offering only the default
    TLS_AES_256_GCM_SHA384, and serves one offering its suite."""
    spec = listener(
        pki.leaf("ccm.example.com"), backends, tls_versions=("TLSv1.3",),
        ciphers=("TLS_AES_128_CCM_SHA256",),
    )
    control.apply(snapshot(spec))
    assert _negotiated(spec.port, "TLS_AES_256_GCM_SHA384") is None
    assert _negotiated(spec.port, "TLS_AES_128_CCM_SHA256") == "TLS_AES_128_CCM_SHA256"
