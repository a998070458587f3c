"""Trust roots: the system store and PEM bundles (chain verification is `pki.verify`).

Only reads trust-store files.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_FALLBACK_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def load_bundle(path: str) -> list[x509.Certificate]:
    """Every readable certificate of the PEM bundle at `path` (malformed blocks are skipped).

    Raises OSError when the file cannot be read. Legacy roots that cryptography only
    deprecates (e.g. a non-positive serial number) are kept without a warning.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    certs: list[x509.Certificate] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in _PEM_CERT.findall(data):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return certs


@functools.cache
def _system_roots() -> tuple[x509.Certificate, ...]:
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.cafile, paths.openssl_cafile, _FALLBACK_BUNDLE):
        if cafile and os.path.isfile(cafile):
            try:
                found = load_bundle(cafile)
            except OSError:
                continue
            if found:
                return tuple(found)
    certs: list[x509.Certificate] = []
    for capath in (paths.capath, paths.openssl_capath):
        if not capath or not os.path.isdir(capath):
            continue
        for name in sorted(os.listdir(capath)):
            full = os.path.join(capath, name)
            if os.path.isfile(full):
                try:
                    certs.extend(load_bundle(full))
                except OSError:
                    continue
        if certs:
            break
    return tuple(dict.fromkeys(certs))


def system_roots() -> list[x509.Certificate]:
    """The system trust store (OpenSSL's default cafile, else capath); cached; [] if none."""
    return list(_system_roots())
