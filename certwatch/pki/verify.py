"""The one chain rule (SPEC §5): a chain verifies when this host's TLS clients accept it.

That is OpenSSL's default verifier (`certwatch.pki.openssl`): a path from the leaf through the
given intermediates to a trusted root, every certificate valid at `now`, the name matching when
one is asked for, the purpose a TLS server's. What the stricter RFC 5280 profile adds (Python
3.13's `VERIFY_X509_STRICT`: e.g. a missing Authority Key Identifier) is reported as findings
in words, never as a failure. Upload warnings, probes, candidate rules and the live check
after a swap all call `verify_chain`, so they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certwatch.pki import openssl

# X509_V_ERR_* codes (openssl/x509_vfy.h) that mean no path to a trusted root was built.
_NO_PATH = {
    2,  # UNABLE_TO_GET_ISSUER_CERT
    4,  # UNABLE_TO_DECRYPT_CERT_SIGNATURE
    6,  # UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
    7,  # CERT_SIGNATURE_FAILURE
    20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    24,  # INVALID_CA
    32,  # KEYUSAGE_NO_CERTSIGN
}
_SELF_SIGNED = {18, 19}  # DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN
_NOT_YET_VALID, _EXPIRED = 9, 10
_NAME_MISMATCH = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH


@dataclass(frozen=True)
class Verdict:
    """Whether clients accept a chain (`problem` None) and what the strict profile finds.

    `incomplete` is True when no path to a trusted root was built (as opposed to a path that
    was built but is expired, for another name or purpose). `findings` are only looked for in
    a chain that verifies.
    """

    problem: str | None
    incomplete: bool = False
    findings: tuple[str, ...] = ()

    @property
    def verifies(self) -> bool:
        """TLS clients accept the chain."""
        return self.problem is None


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={cns[0].value!s}" if cns else cert.subject.rfc4514_string()


def label(index: int, cert: x509.Certificate) -> str:
    """`certificate 2 (CN=…)`: a chain member by its 1-based position, as messages name it."""
    return f"certificate {index} ({_name(cert)})"


def _about(
    failure: openssl.Failure, chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> str:
    if failure.chain_index is not None:
        return label(failure.chain_index + 1, chain[failure.chain_index])
    if failure.root_index is not None:
        return f"the trusted root ({_name(roots[failure.root_index])})"
    return f"the certificate at depth {failure.depth}"


def _reason(
    failure: openssl.Failure, chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> str:
    about = _about(failure, chain, roots)
    if failure.code in _NAME_MISMATCH:
        return "name mismatch"
    if failure.code in _NO_PATH:
        return "unable to build a path to a trusted root"
    if failure.code in _SELF_SIGNED:
        return f"unable to build a path to a trusted root: {about} is self-signed, not trusted"
    if failure.code in (_EXPIRED, _NOT_YET_VALID):
        words = "expired" if failure.code == _EXPIRED else "not yet valid"
        return words if failure.chain_index == 0 else f"{about} {words}"
    return f"{about}: {failure.text}"


@functools.lru_cache(maxsize=4096)
def _der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _der(certs: Sequence[x509.Certificate]) -> list[bytes]:
    return [_der_of(cert) for cert in certs]


def verify_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    server_name: str | None = None,
    findings: bool = True,
) -> Verdict:
    """Judge `chain` (leaf first, then intermediates in any order) against `roots` at `now`.

    With `server_name` the leaf must match it (a DNS name, or an IP address, bracketed or not).
    `findings` False skips the strict pass (the rule alone: candidates, the live check).
    Verdicts are kept (the same chain, roots, second and name give the same verdict), so a
    scan or a rotation that judges one chain many times pays once.
    """
    if not chain:
        return Verdict("empty chain", incomplete=True)
    if not roots:
        return Verdict("no trusted roots", incomplete=True)
    return _judge(
        tuple(chain), tuple(roots), int(now.timestamp()), server_name or None, findings
    )


@functools.lru_cache(maxsize=4096)
def _judge(
    chain: tuple[x509.Certificate, ...],
    roots: tuple[x509.Certificate, ...],
    at: int,
    server_name: str | None,
    with_findings: bool,
) -> Verdict:
    host = ip = None
    if server_name:
        try:
            ip = str(ipaddress.ip_address(server_name.strip("[]")))
        except ValueError:
            host = server_name
    served, trusted = _der(chain), _der(roots)
    try:
        failures = openssl.verify(served, trusted, at, host=host, ip=ip)
    except ValueError:
        return Verdict(f"invalid server name {server_name!r}")
    if failures:
        first = failures[0]
        incomplete = first.code in _NO_PATH or first.code in _SELF_SIGNED
        return Verdict(_reason(first, chain, roots), incomplete=incomplete)
    if not with_findings:
        return Verdict(None)
    strict = openssl.verify(served, trusted, at, strict=True)
    findings = [f"{_about(f, chain, roots)}: {f.text}" for f in strict]
    return Verdict(None, findings=tuple(dict.fromkeys(findings)))
