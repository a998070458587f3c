"""TLS security policies: the cloud original's five system policies, plus custom ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from certwatch import errors
from certwatch.store.models import SecurityPolicy

ECDHE_STRONG = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES256-SHA384",
)
ECDHE_SHA1 = (
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
)
RSA_KX = (
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
)
TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
ALL_CIPHERS = ECDHE_STRONG + ECDHE_SHA1 + RSA_KX + TLS13_SUITES
# The ciphers that work below TLS 1.2: AES-GCM and the SHA-256/384 CBC ciphers need TLS 1.2.
BEFORE_TLS12 = ECDHE_SHA1 + ("AES128-SHA", "AES256-SHA", "DES-CBC3-SHA")
_USABLE_AT = {
    "TLSv1.0": BEFORE_TLS12,
    "TLSv1.1": BEFORE_TLS12,
    "TLSv1.2": ECDHE_STRONG + ECDHE_SHA1 + RSA_KX,
    "TLSv1.3": TLS13_SUITES,
}
ALL_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
MAX_CIPHERS = 32
DEFAULT_POLICY = "tls_cipher_policy_1_2"


@dataclass(frozen=True)
class Policy:
    """A security policy: TLS versions and ciphers (TLS 1.3 suites listed with the ciphers)."""

    policy_id: str
    name: str
    system: bool
    tls_versions: tuple[str, ...]
    ciphers: tuple[str, ...]

    @property
    def tls12_ciphers(self) -> tuple[str, ...]:
        """The ciphers for TLS 1.2 and below (OpenSSL names)."""
        return tuple(c for c in self.ciphers if c not in TLS13_SUITES)


def _system(name: str, versions: tuple[str, ...], ciphers: tuple[str, ...]) -> Policy:
    return Policy(name, name, True, versions, ciphers)


SYSTEM_POLICIES: dict[str, Policy] = {
    p.policy_id: p
    for p in (
        _system(
            "tls_cipher_policy_1_0",
            ("TLSv1.0", "TLSv1.1", "TLSv1.2"),
            ECDHE_STRONG + ECDHE_SHA1 + RSA_KX,
        ),
        _system(
            "tls_cipher_policy_1_1", ("TLSv1.1", "TLSv1.2"), ECDHE_STRONG + ECDHE_SHA1 + RSA_KX
        ),
        _system("tls_cipher_policy_1_2", ("TLSv1.2",), ECDHE_STRONG + ECDHE_SHA1 + RSA_KX),
        _system("tls_cipher_policy_1_2_strict", ("TLSv1.2",), ECDHE_STRONG + ECDHE_SHA1),
        _system(
            "tls_cipher_policy_1_2_strict_with_1_3",
            ("TLSv1.2", "TLSv1.3"),
            ECDHE_STRONG + ECDHE_SHA1 + TLS13_SUITES,
        ),
    )
}


def check_custom(name: str, versions: list[str], ciphers: list[str]) -> str | None:
    """Why a custom policy is not acceptable, or None when it is."""
    if not name.strip():
        return "SecurityPolicyName must not be empty"
    if not versions:
        return "TlsVersions must name at least one of " + ", ".join(ALL_VERSIONS)
    unknown = [v for v in versions if v not in ALL_VERSIONS]
    if unknown:
        return f"unknown TLS version(s) {unknown}; choose from {list(ALL_VERSIONS)}"
    if not ciphers:
        return "Ciphers must name at least one cipher"
    if len(ciphers) > MAX_CIPHERS:
        return f"at most {MAX_CIPHERS} ciphers may be given, got {len(ciphers)}"
    unknown = [c for c in ciphers if c not in ALL_CIPHERS]
    if unknown:
        return f"unknown cipher(s) {unknown}; choose from the system policies' ciphers"
    if "TLSv1.3" in versions and not any(c in TLS13_SUITES for c in ciphers):
        return "TLSv1.3 is enabled but no TLS 1.3 suite is listed"
    if any(v != "TLSv1.3" for v in versions) and not any(c not in TLS13_SUITES for c in ciphers):
        return "TLS 1.2 or below is enabled but no cipher for it is listed"
    return impossible(versions, ciphers)


def impossible(versions: Sequence[str], ciphers: Sequence[str]) -> str | None:
    """Why a policy cannot be served (an enabled TLS version none of its ciphers works at),
    or None when every version it enables can be negotiated."""
    for version in versions:
        usable = _USABLE_AT.get(version, ())
        if not any(c in usable for c in ciphers):
            why = (
                "AES-GCM and SHA-256/SHA-384 ciphers need TLS 1.2; add one of "
                + ", ".join(BEFORE_TLS12)
                if version in ("TLSv1.0", "TLSv1.1")
                else "add one of " + ", ".join(usable)
            )
            return f"{version} is enabled but none of the listed ciphers works at {version}: {why}"
    return None


def resolve_policy(session: Session, policy_id: str) -> Policy:
    """A system policy by name or a custom policy by id, or 404 SecurityPolicyNotFound."""
    if policy_id in SYSTEM_POLICIES:
        return SYSTEM_POLICIES[policy_id]
    row = session.get(SecurityPolicy, policy_id)
    if row is None:
        raise errors.NotFound("SecurityPolicy", policy_id)
    return Policy(row.id, row.name, False, tuple(row.tls_versions), tuple(row.ciphers))
