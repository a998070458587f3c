"""RFC 9773 pieces that are pure: the certificate id, the time picked in a window, Retry-After."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwatch.acme import ari

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")


def _cert(serial: int, aki: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=90))
    )
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(aki, None, None), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_cert_id_is_the_rfc_9773_example() -> None:
    """The id of RFC 9773's example certificate (§4.1) is the RFC's string."""
    assert ari.cert_id(_cert(0x87654321, RFC_AKI)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_cert_id_serial_without_a_high_bit_has_no_leading_zero() -> None:
    """A serial whose top bit is clear is encoded without the sign byte."""
    assert ari.cert_id(_cert(0x7F01, RFC_AKI)).endswith(".fwE")


def test_cert_id_needs_an_authority_key_identifier() -> None:
    """A certificate without AKI has no ARI id (ValueError, not a malformed URL)."""
    with pytest.raises(ValueError, match="Authority Key Identifier"):
        ari.cert_id(_cert(5, None))


def test_pick_stays_inside_the_window() -> None:
    """The picked time is start at 0, near the end at ~1, and start for an empty window."""
    start, end = NOW, NOW + dt.timedelta(hours=10)
    assert ari.pick(start, end, 0.0) == start
    assert ari.pick(start, end, 0.5) == NOW + dt.timedelta(hours=5)
    assert start < ari.pick(start, end, 0.999) < end
    assert ari.pick(start, start, 0.7) == start


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("3600", dt.timedelta(hours=1)),
        (None, dt.timedelta(hours=6)),
        ("soon", dt.timedelta(hours=6)),
        ("0", dt.timedelta(minutes=1)),
        ("999999", dt.timedelta(days=1)),
        ("Wed, 02 Dec 2026 14:00:00 GMT", dt.timedelta(hours=2)),
    ],
)
def test_retry_after_is_honoured_within_a_minute_and_a_day(
    header: str | None, wait: dt.timedelta
) -> None:
    """Retry-After in seconds or as a date sets the next check, clamped to 1 min .. 1 day."""
    assert ari.next_check(header, NOW) == NOW + wait
