"""Trust roots and path verification: the system store, PEM bundles, served-chain checks.

Only reads trust-store files; every check takes `now` from the caller.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
import ssl
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

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


def _label(index: int, cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = f"CN={cns[0].value!s}" if cns else cert.subject.rfc4514_string()
    return f"certificate {index} ({name})"


def _subject(server_name: str) -> verification.DNSName | verification.IPAddress:
    try:
        return verification.IPAddress(ipaddress.ip_address(server_name.strip("[]")))
    except ValueError:
        return verification.DNSName(server_name)


def verify_served_chain(
    chain: list[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    server_name: str | None,
) -> str | None:
    """None when chain[0] + chain[1:] verify to one of `roots` at `now`, else a short reason.

    With `server_name` the WebPKI server policy applies (SAN must match the name);
    without it the path is built with a client-agnostic leaf policy (any EKU/SAN).
    """
    if not chain:
        return "empty chain"
    if not roots:
        return "no trusted roots"
    leaf, intermediates = chain[0], list(chain[1:])
    builder = verification.PolicyBuilder().store(verification.Store(list(roots))).time(now)
    try:
        if server_name:
            try:
                subject = _subject(server_name)
            except ValueError:
                return f"invalid server name {server_name!r}"
            builder.build_server_verifier(subject).verify(leaf, intermediates)
        else:
            builder.extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            ).build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as exc:
        return _reason(str(exc), chain, now)
    return None


def _reason(message: str, chain: list[x509.Certificate], now: dt.datetime) -> str:
    leaf = chain[0]
    if now >= leaf.not_valid_after_utc:
        return "expired"
    if now < leaf.not_valid_before_utc:
        return "not yet valid"
    if "subjectAltName" in message:
        return "name mismatch"
    for i, cert in enumerate(chain[1:], start=2):
        if now >= cert.not_valid_after_utc:
            return f"{_label(i, cert)} expired"
        if now < cert.not_valid_before_utc:
            return f"{_label(i, cert)} not yet valid"
    detail = message.removeprefix("validation failed: ")
    detail = re.sub(r"\s*\(encountered processing <Certificate.*\)$", "", detail)
    if "candidates exhausted" in detail:
        inner = detail.split("candidates exhausted:", 1)[1].strip()
        if not inner or "no interior errors" in inner:
            return "unable to build a path to a trusted root"
        return f"unable to build a path to a trusted root: {inner}"
    return detail
