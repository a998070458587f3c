"""DeltaEncoder: a change carries what changed, material once, and what is no longer used."""

from __future__ import annotations

import dataclasses

from offload.delta import DeltaEncoder, Materials
from offload.spec import Backend, CertChain, ListenerSpec, Snapshot, TicketKey

BACKENDS = (Backend("127.0.0.1", 9),)


def _chain(n: int) -> CertChain:
    return CertChain(f"chain-{n}", f"key-{n}", (f"n{n}.example",))


def _spec(i: int, default: int, *additional: int) -> ListenerSpec:
    return ListenerSpec(
        f"lsn-{i:016x}", "127.0.0.1", 10_000 + i, _chain(default), BACKENDS,
        additional_certs=tuple(_chain(n) for n in additional),
    )


def _inventory(listeners: int = 100, per: int = 10) -> list[ListenerSpec]:
    return [
        _spec(i, i * per, *range(i * per + 1, (i + 1) * per)) for i in range(listeners)
    ]


def test_first_change_carries_everything_then_a_swap_carries_one_listener() -> None:
    """After the whole state once, one listener's swap sends that listener and one chain."""
    encoder, specs = DeltaEncoder(), _inventory()
    first = encoder.change(Snapshot(1, tuple(specs)))
    assert len(first.listeners) == 100 and len(first.materials) == 1000
    swapped = dataclasses.replace(specs[7], default_cert=_chain(5000))
    specs[7] = swapped
    second = encoder.change(Snapshot(2, tuple(specs)))
    assert [w.spec.listener_id for w in second.listeners] == [swapped.listener_id]
    assert list(second.materials.values()) == [_chain(5000)]
    assert len(second.forget) == 1 and second.removed == ()


def test_unchanged_snapshot_is_an_empty_change() -> None:
    """A write that changes nothing in the data plane sends no listener and no material."""
    encoder, specs = DeltaEncoder(), _inventory(10, 3)
    encoder.change(Snapshot(1, tuple(specs)))
    again = encoder.change(Snapshot(2, tuple(dataclasses.replace(s) for s in specs)))
    assert (again.listeners, again.materials, again.forget, again.removed) == ((), {}, (), ())
    assert again.revision == 2


def test_material_shared_by_two_listeners_is_sent_once_and_kept_while_used() -> None:
    """One certificate on two listeners travels once and is forgotten only with its last use."""
    encoder = DeltaEncoder()
    a, b = _spec(1, 1), _spec(2, 1)
    first = encoder.change(Snapshot(1, (a, b)))
    assert len(first.materials) == 1
    only_b = encoder.change(Snapshot(2, (b,)))
    assert only_b.removed == (a.listener_id,) and only_b.forget == ()
    none = encoder.change(Snapshot(3, ()))
    assert none.removed == (b.listener_id,) and len(none.forget) == 1


def test_worker_rebuilds_the_parents_specs_from_changes_and_a_full_state() -> None:
    """Materials turns wire listeners back into equal specs, for changes and a new worker."""
    encoder, specs = DeltaEncoder(), _inventory(20, 4)
    worker = Materials()
    assert worker.receive(encoder.change(Snapshot(1, tuple(specs)))) == specs
    specs[3] = dataclasses.replace(specs[3], additional_certs=(_chain(0), _chain(9999)))
    assert worker.receive(encoder.change(Snapshot(2, tuple(specs)))) == [specs[3]]
    fresh = Materials()
    assert fresh.receive(encoder.full()) == specs
    assert len(fresh) == len({c for s in specs for c in (s.default_cert, *s.additional_certs)})


def test_ticket_keys_travel_only_when_they_change() -> None:
    """Session ticket keys go out with the first change and each rotation, not otherwise;
    a new worker's full state carries the current ones."""
    encoder, specs = DeltaEncoder(), tuple(_inventory(3, 1))
    first, second = TicketKey.generate(), TicketKey.generate()
    assert encoder.change(Snapshot(1, specs, (first,))).ticket_keys == (first,)
    assert encoder.change(Snapshot(2, specs, (first,))).ticket_keys is None
    rotated = encoder.change(Snapshot(3, specs, (second, first)))
    assert rotated.ticket_keys == (second, first) and rotated.listeners == ()
    assert encoder.full().ticket_keys == (second, first)


def test_a_full_state_after_prepare_needs_only_the_material_added_since() -> None:
    """A replacement prepared from one state gets the next full state without the material
    it already holds, rebuilds equal specs, and drops what no listener uses any more."""
    encoder, specs = DeltaEncoder(), _inventory(10, 3)
    encoder.change(Snapshot(1, tuple(specs)))
    prepare = encoder.full(prepare=True)
    fresh = Materials()
    fresh.receive(prepare)
    specs[2] = dataclasses.replace(specs[2], default_cert=_chain(777))
    encoder.change(Snapshot(2, tuple(specs)))
    full = encoder.full()
    lean = dataclasses.replace(
        full, materials={k: v for k, v in full.materials.items() if k not in prepare.materials}
    )
    assert list(lean.materials.values()) == [_chain(777)]
    assert fresh.receive(lean) == specs
    assert len(fresh) == 30  # the swapped-out chain is gone
