"""Benchmark certificates: root -> intermediate -> leaf chains, ECDSA P-256 and RSA-2048."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SERVER_NAME = "bench.example"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class ChainFiles:
    """One generated chain on disk plus its PEM text."""

    kind: str
    chain_pem: str  # leaf then intermediate
    key_pem: str
    chain_path: Path
    key_path: Path
    combined_path: Path  # chain + key, the form HAProxy's `crt` reads
    root_path: Path


def _new_key(kind: str) -> PrivateKey:
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(
    subject: str,
    key: PrivateKey,
    issuer: x509.Name | None,
    issuer_key: PrivateKey,
    *,
    ca: bool,
    san: str | None = None,
    days: int = 30,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_chain(kind: str, out_dir: Path) -> ChainFiles:
    """Generate root, intermediate and leaf (all of `kind`: "ecdsa" or "rsa") into out_dir."""
    root_key, int_key, leaf_key = _new_key(kind), _new_key(kind), _new_key(kind)
    root = _cert(f"bench {kind} root", root_key, None, root_key, ca=True)
    inter = _cert(f"bench {kind} intermediate", int_key, root.subject, root_key, ca=True)
    leaf = _cert(SERVER_NAME, leaf_key, inter.subject, int_key, ca=False, san=SERVER_NAME)
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    chain_pem = _pem(leaf) + _pem(inter)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "chain": out_dir / f"{kind}-chain.pem",
        "key": out_dir / f"{kind}-key.pem",
        "combined": out_dir / f"{kind}-haproxy.pem",
        "root": out_dir / f"{kind}-root.pem",
    }
    paths["chain"].write_text(chain_pem)
    paths["key"].write_text(key_pem)
    paths["combined"].write_text(chain_pem + key_pem)
    paths["root"].write_text(_pem(root))
    for p in paths.values():
        p.chmod(0o600)
    return ChainFiles(
        kind,
        chain_pem,
        key_pem,
        paths["chain"],
        paths["key"],
        paths["combined"],
        paths["root"],
    )


def _key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class LeafFactory:
    """One ECDSA P-256 CA that signs many ECDSA P-256 leaves quickly (one key per leaf).

    `ca_pem` is the CA certificate (trust it in clients, or upload it as a `Ca`
    certificate); `leaf(name)` returns (certificate PEM, PKCS#8 key PEM) for `name`, with
    `name` as common name and only DNS SAN, valid for `days` (default 365, beyond the
    alert thresholds).
    """

    def __init__(self, label: str = "bench soak", days: int = 365) -> None:
        self._days = days
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca = _cert(f"{label} CA", self._ca_key, None, self._ca_key, ca=True, days=days)
        self.ca_pem = _pem(self._ca)

    def leaf(self, name: str) -> tuple[str, str]:
        """A new leaf for DNS name `name` signed by the CA: (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, key, self._ca.subject, self._ca_key, ca=False, san=name, days=self._days)
        return _pem(cert), _key_pem(key)
