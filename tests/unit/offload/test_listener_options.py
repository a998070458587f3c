"""Pure parts of the listener options: the PROXY v2 header, the shared connection limits
(rate, cap, slots, a dead worker's connections), and the delta carrying ACME challenges."""

from __future__ import annotations

import struct

import pytest

from offload import proxyproto
from offload.delta import DeltaEncoder
from offload.limits import SECOND_NS, SharedLimits
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


def test_cps_admits_a_second_of_connections_at_once_then_the_rate() -> None:
    """Cps 4: 4 of a burst at t=0 (from either worker), none more, one at 0.25 s."""
    limits = SharedLimits(2, 2)
    gen = limits.assign(0)
    got = [limits.admit(0, gen, i % 2, 0, 4, 0) for i in range(6)]
    assert got == [True] * 4 + [False] * 2
    quarter = SECOND_NS // 4
    assert limits.admit(0, gen, 1, 0, 4, quarter) and not limits.admit(0, gen, 0, 0, 4, quarter)


def test_max_connections_holds_over_every_worker() -> None:
    """MaxConnections 3 with connections on two workers: the fourth is refused on either;
    after one closes, one more is served."""
    limits = SharedLimits(1, 2)
    gen = limits.assign(0)
    assert [limits.admit(0, gen, w, 3, 0) for w in (0, 1, 1)] == [True] * 3
    assert not limits.admit(0, gen, 0, 3, 0) and not limits.admit(0, gen, 1, 3, 0)
    limits.release(0, gen, 1)
    assert limits.open(0) == 2 and limits.admit(0, gen, 0, 3, 0)


def test_a_dead_workers_connections_are_taken_off() -> None:
    """`recover` removes only the dead worker's open connections from the listener's count."""
    limits = SharedLimits(2, 2)
    gens = [limits.assign(0), limits.assign(1)]
    for slot, worker in [(0, 0), (0, 0), (0, 1), (1, 0)]:
        assert limits.admit(slot, gens[slot], worker, 0, 0)
    limits.recover(0, 2)
    assert (limits.open(0), limits.open(1)) == (1, 0)
    limits.release(0, gens[0], 0)  # a connection of the dead worker: already taken off
    assert limits.open(0) == 1


def test_a_reused_slot_ignores_the_old_listeners_connections() -> None:
    """A slot given to a new listener starts at zero with a new generation; connections of
    the listener it was (old generation) neither count nor uncount there."""
    limits = SharedLimits(1, 1)
    old = limits.assign(0)
    assert limits.admit(0, old, 0, 0, 0) and limits.admit(0, old, 0, 0, 0)
    new = limits.assign(0)
    assert new == old + 1 and limits.open(0) == 0
    assert limits.admit(0, new, 0, 1, 0)
    limits.release(0, old, 0)
    assert limits.open(0) == 1 and not limits.admit(0, new, 0, 1, 0)


def test_the_delta_gives_each_listener_a_slot_and_reuses_freed_ones_last() -> None:
    """New listeners get fresh slots; a removed one's slot goes to a later listener only
    once the fresh ones are used, under a new generation; too many is a ValueError that
    changes nothing."""
    limits = SharedLimits(2, 1)
    encoder = DeltaEncoder(limits)
    a, b, c = (ListenerSpec(lid, "127.0.0.1", 4430 + i, CertChain("c", "k"), ())
               for i, lid in enumerate(("lsn-a", "lsn-b", "lsn-c")))
    first = encoder.change(Snapshot(1, (a,)))
    assert [(w.limit_slot, w.limit_generation) for w in first.listeners] == [(0, 1)]
    with pytest.raises(ValueError, match="more than the proxy's 2 connection-limit slots"):
        encoder.change(Snapshot(2, (a, b, c)))
    encoder.change(Snapshot(3, (b,)))  # a removed: slot 0 free, slot 1 fresh to b
    third = encoder.change(Snapshot(4, (b, c)))
    assert [(w.limit_slot, w.limit_generation) for w in third.listeners] == [(0, 2)]
    assert encoder.slots_used == 2


def test_challenges_travel_only_when_they_change() -> None:
    """A change carries the challenge set when it differs, None otherwise; full() has it."""
    encoder, challenge = DeltaEncoder(), ChallengeCert("a.example", "cert", "key")
    first = encoder.change(Snapshot(1, (_spec(),), challenges=(challenge,)))
    same = encoder.change(Snapshot(2, (_spec(),), challenges=(challenge,)))
    gone = encoder.change(Snapshot(3, (_spec(),)))
    assert (first.challenges, same.challenges, gone.challenges) == ((challenge,), None, ())
    assert encoder.full().challenges == ()
