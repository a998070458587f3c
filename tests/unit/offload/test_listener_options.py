"""Pure parts of the listener options: the PROXY v2 header, limit shares and the token
bucket, and the delta carrying ACME challenges."""

from __future__ import annotations

import struct

from offload import proxyproto
from offload.delta import DeltaEncoder
from offload.limits import Admission, share
from offload.spec import Backend, CertChain, ChallengeCert, ListenerSpec, Snapshot


def _spec(**fields: object) -> ListenerSpec:
    return ListenerSpec(
        "lsn-1", "127.0.0.1", 4430, CertChain("c", "k"), (Backend("127.0.0.1", 80),),
        **fields,  # type: ignore[arg-type]
    )


def test_ipv4_header_carries_addresses_ports_and_authority() -> None:
    """A v2 PROXY header over IPv4 has the signature, 0x21, TCP4, both ends and the SNI TLV."""
    got = proxyproto.header(("10.0.0.7", 51000), ("127.0.0.1", 443), "a.example")
    body = b"\x0a\x00\x00\x07\x7f\x00\x00\x01" + struct.pack("!HH", 51000, 443)
    body += b"\x02\x00\x09a.example"
    assert got == proxyproto.SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def test_ipv6_header_without_sni_has_no_tlv() -> None:
    """Over IPv6 the family is TCP6 with 16-byte addresses; no SNI, no TLV."""
    got = proxyproto.header(("::1", 1, 0, 0), ("::2", 2, 0, 0))
    assert got[12:16] == b"\x21\x21\x00\x24"
    assert got[16:] == bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x00\x01\x00\x02"


def test_ipv4_mapped_client_on_an_ipv4_listener_is_ipv4() -> None:
    """An IPv4-mapped IPv6 client address is sent as plain IPv4."""
    got = proxyproto.header(("::ffff:10.1.2.3", 5), ("10.0.0.1", 6))
    assert got[13] == 0x11 and got[16:20] == b"\x0a\x01\x02\x03"


def test_share_rounds_up_and_zero_is_unlimited() -> None:
    """Each of N workers gets ceil(limit / N); 0 stays unlimited."""
    assert [share(10, 3), share(1, 2), share(0, 4), share(6, 1)] == [4, 1, 0, 6]


def test_cps_bucket_admits_a_burst_then_the_rate() -> None:
    """Cps 4 on one worker: 4 of a burst at t=0, none more, one after 0.25 s."""
    admission, spec = Admission(1), _spec(cps=4)
    assert [admission.admit(spec, 0, 0.0) for _ in range(6)] == [True] * 4 + [False] * 2
    assert admission.admit(spec, 0, 0.25) and not admission.admit(spec, 0, 0.25)


def test_max_connections_counts_open_connections() -> None:
    """MaxConnections 4 on two workers: a worker with 2 open refuses, with 1 admits."""
    admission, spec = Admission(2), _spec(max_connections=4)
    assert not admission.admit(spec, 2, 0.0) and admission.admit(spec, 1, 0.0)


def test_challenges_travel_only_when_they_change() -> None:
    """A change carries the challenge set when it differs, None otherwise; full() has it."""
    encoder, challenge = DeltaEncoder(), ChallengeCert("a.example", "cert", "key")
    first = encoder.change(Snapshot(1, (_spec(),), challenges=(challenge,)))
    same = encoder.change(Snapshot(2, (_spec(),), challenges=(challenge,)))
    gone = encoder.change(Snapshot(3, (_spec(),)))
    assert (first.challenges, same.challenges, gone.challenges) == ((challenge,), None, ())
    assert encoder.full().challenges == ()
