"""Private keys for ACME certificates, of the key types `acme.key_type` names."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}
RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


def new_key_pem(key_type: str) -> bytes:
    """A fresh private key of `key_type`, as unencrypted PKCS#8 PEM."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type in CURVES:
        key = ec.generate_private_key(CURVES[key_type])
    elif key_type in RSA_BITS:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[key_type])
    else:
        raise ValueError(f"unknown key type {key_type!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
