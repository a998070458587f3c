"""Certificates made on the fly (chosen validity, key type, chain) for the demo and the tests.

Nothing made here is committed key material: every key is generated per run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def make_key(kind: str = "ec256") -> PrivateKey:
    """A fresh key: `ec256`, `ec384`, `rsa2048`, `rsa1024` or `ed25519`."""
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    """A certificate with its key and the chain above it (intermediates, not the root)."""

    cert: x509.Certificate
    key: PrivateKey
    parents: list[x509.Certificate] = field(default_factory=list)

    @property
    def cert_pem(self) -> str:
        """The leaf alone, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def chain_pem(self) -> str:
        """Leaf then every intermediate, PEM: what a server sends."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in [self.cert, *self.parents]
        )

    @property
    def key_pem(self) -> str:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def upload_params(
        self, name: str, cert_type: str = "Server", chain: bool = True
    ) -> dict[str, str]:
        """`UploadCertificate` parameters for this certificate: its chain (or the leaf alone),
        and its key when it is a Server certificate."""
        params = {
            "CertificateName": name,
            "CertificateType": cert_type,
            "Certificate": self.chain_pem if chain else self.cert_pem,
        }
        if cert_type == "Server":
            params["PrivateKey"] = self.key_pem
        return params

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER leaf, lower-case hex."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def issue(self, *names: str, **kwargs: object) -> Issued:
        """Issue a certificate signed by this one (see `issue`)."""
        return issue(*names, issuer=self, **kwargs)  # type: ignore[arg-type]


def issue(
    *names: str,
    issuer: Issued | None = None,
    common_name: str | None = None,
    key: str = "ec256",
    ca: bool = False,
    days: float = 90,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    client: bool = False,
    aki: bool = True,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
) -> Issued:
    """Issue a certificate for DNS `names` (or an IP), self-signed when no `issuer`.

    Validity runs from `not_before` (default: an hour ago) to `not_after`
    (default: `days` from now); expired or not-yet-valid windows are allowed.
    `aki=False` leaves out the Authority Key Identifier, as some private CAs do.
    `crl_url` names a CRL distribution point, `ocsp_url` an OCSP responder (AIA).
    """
    private_key = make_key(key)
    start = not_before or _now() - dt.timedelta(hours=1)
    end = not_after or _now() + dt.timedelta(days=days)
    cn = common_name or (names[0] if names else "certwatch test")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key = issuer.key if issuer else private_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False
        )
    )
    if issuer is not None and aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = (
            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
            if client
            else (x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if ocsp_url is not None:
        responder = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(
            x509.AuthorityInformationAccess([responder]), critical=False
        )
    cert = builder.sign(signer_key, _algorithm(signer_key))
    parents: list[x509.Certificate] = []
    if issuer is not None and not _is_self_signed(issuer.cert):
        parents = [issuer.cert, *issuer.parents]
    return Issued(cert=cert, key=private_key, parents=parents)


def _algorithm(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass(frozen=True)
class Revocation:
    """One entry of a CRL: which certificate, since when, and why (None: no reason given)."""

    cert: x509.Certificate
    revoked_at: dt.datetime
    reason: x509.ReasonFlags | None = None


def make_crl(
    issuer: Issued,
    revoked: Sequence[Revocation] = (),
    next_update: dt.datetime | None = None,
    this_update: dt.datetime | None = None,
    signer: Issued | None = None,
) -> bytes:
    """A DER CRL in `issuer`'s name listing `revoked`, signed by `signer` (default: the
    issuer; another key makes a forged CRL), current from `this_update` (default: a minute
    ago) to `next_update` (default: a day from now)."""
    start = this_update or _now() - dt.timedelta(minutes=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(start)
        .next_update(next_update or _now() + dt.timedelta(days=1))
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.cert.serial_number)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not None:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    key = (signer or issuer).key
    return builder.sign(key, _algorithm(key)).public_bytes(serialization.Encoding.DER)


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


@dataclass
class Pki:
    """A root CA, an intermediate under it, and a way to issue leaves from the intermediate."""

    root: Issued
    intermediate: Issued
    aki: bool = True

    @property
    def root_pem(self) -> str:
        """The root alone: what a client trusts."""
        return self.root.cert_pem

    def leaf(self, *names: str, **kwargs: object) -> Issued:
        """A server leaf under the intermediate; its chain_pem carries the intermediate."""
        return self.intermediate.issue(*names, **{"aki": self.aki, **kwargs})


def make_pki(name: str = "certwatch test", key: str = "ec256", aki: bool = True) -> Pki:
    """A fresh two-level PKI (root → intermediate) valid for ten years; `aki=False`: no
    certificate below the root carries an Authority Key Identifier."""
    root = issue(common_name=f"{name} root CA", ca=True, key=key, days=3650)
    intermediate = root.issue(
        common_name=f"{name} intermediate CA", ca=True, key=key, days=3000, aki=aki
    )
    return Pki(root=root, intermediate=intermediate, aki=aki)
