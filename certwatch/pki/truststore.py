"""Trust roots: the system store and PEM bundles (chain verification is `pki.verify`).

The system roots are OpenSSL's default CA file, else its CA folder; where both are empty or
missing (slim container images ship none), certifi's Mozilla bundle stands in, and the log
says so once per process. Only reads trust-store files.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import certifi
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_DEBIAN_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class TrustStore:
    """Trusted roots and where they came from (`source`: a file, a folder, or certifi's bundle)."""

    roots: tuple[x509.Certificate, ...]
    source: str
    from_certifi: bool = False


def _from_files(cafiles: Iterable[str | None]) -> tuple[tuple[x509.Certificate, ...], str]:
    for cafile in cafiles:
        if cafile and os.path.isfile(cafile):
            try:
                found = load_bundle(cafile)
            except OSError:
                continue
            if found:
                return tuple(found), cafile
    return (), ""


def _from_folders(capaths: Iterable[str | None]) -> tuple[tuple[x509.Certificate, ...], str]:
    for capath in capaths:
        if not capath or not os.path.isdir(capath):
            continue
        certs: list[x509.Certificate] = []
        for name in sorted(os.listdir(capath)):
            full = os.path.join(capath, name)
            if os.path.isfile(full):
                try:
                    certs.extend(load_bundle(full))
                except OSError:
                    continue
        if certs:
            return tuple(dict.fromkeys(certs)), capath
    return (), ""


def load_trust_store(
    cafiles: Sequence[str | None],
    capaths: Sequence[str | None],
    fallback_bundle: str | None = None,
) -> TrustStore:
    """The roots of the first bundle in `cafiles` that holds any, else of the first folder in
    `capaths` that does; when none does (a slim container), certifi's bundle (or
    `fallback_bundle`), which it logs as a warning. No roots anywhere: empty, also logged."""
    roots, source = _from_files(cafiles)
    if not roots:
        roots, source = _from_folders(capaths)
    if roots:
        return TrustStore(roots, source)
    looked = ", ".join(p for p in (*cafiles, *capaths) if p) or "nowhere"
    bundle = fallback_bundle or certifi.where()
    roots, _ = _from_files([bundle])
    if roots:
        log.warning(
            "the system trust store is empty (looked in %s); using certifi's bundle %s "
            "(%d roots) as the system roots",
            looked,
            bundle,
            len(roots),
        )
        return TrustStore(roots, bundle, from_certifi=True)
    log.warning(
        "no trusted roots: the system trust store (looked in %s) and certifi's bundle %s "
        "are empty; only uploaded Ca certificates and scan.trusted_ca_file are trusted",
        looked,
        bundle,
    )
    return TrustStore((), "")


def _system_paths() -> tuple[list[str | None], list[str | None]]:
    """OpenSSL's default cafile and capath (and the Debian bundle) to look for system roots."""
    paths = ssl.get_default_verify_paths()
    return (
        [paths.cafile, paths.openssl_cafile, _DEBIAN_BUNDLE],
        [paths.capath, paths.openssl_capath],
    )


@functools.cache
def system_trust_store() -> TrustStore:
    """The system trust store, loaded once per process (so its fallback is logged once)."""
    cafiles, capaths = _system_paths()
    return load_trust_store(cafiles, capaths)


def system_roots() -> list[x509.Certificate]:
    """The system trust store (OpenSSL's default cafile, else capath, else certifi's bundle);
    cached; [] if none."""
    return list(system_trust_store().roots)
