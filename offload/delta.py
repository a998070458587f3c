"""What a worker is sent: the listeners that changed, and certificate material sent once.

The parent's `DeltaEncoder` remembers what every worker has been told and turns each new
`Snapshot` into a `Change`: listeners added or changed (with their certificates as keys),
listeners removed, the material of keys no worker has yet, the keys no listener uses
any more, and the session ticket keys and the ACME challenges when they changed. So a
change costs what it changes, not what the inventory holds. A new worker
gets `full()`: the whole current state, once. `Materials` is the worker's side: it turns the
wire form back into the very `ListenerSpec`s the parent holds.

Each listener also gets a slot of the shared connection limits (`offload.limits`) while it
exists; a slot freed by a removed listener is used again only once the fresh ones run out,
and then under a new generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from offload.limits import SharedLimits
from offload.spec import CertChain, ChallengeCert, ListenerSpec, Snapshot, TicketKey

_NO_CERT = CertChain("", "")


@dataclass(frozen=True)
class WireListener:
    """A listener spec without its certificates, which travel as material keys, and its slot
    (and the slot's generation) in the shared connection limits."""

    spec: ListenerSpec
    default_key: str
    additional_keys: tuple[str, ...]
    limit_slot: int = -1
    limit_generation: int = 0


@dataclass(frozen=True)
class Change:
    """One step from what a worker serves to `revision`.

    `full`: the listeners are the whole state (every other one is removed).
    `ticket_keys`: the new session ticket keys, None when they did not change.
    `challenges`: the whole new set of ACME challenges, None when it did not change.
    `prepare`: build the listeners' TLS contexts, but serve nothing yet: a replacement
    worker does the slow part before it is given the current state (see `ProxyControl`).
    """

    revision: int
    listeners: tuple[WireListener, ...] = ()
    removed: tuple[str, ...] = ()
    materials: dict[str, CertChain] = field(default_factory=dict)
    forget: tuple[str, ...] = ()
    full: bool = False
    ticket_keys: tuple[TicketKey, ...] | None = None
    prepare: bool = False
    challenges: tuple[ChallengeCert, ...] | None = None


def material_key(chain: CertChain) -> str:
    """The name a chain and key travel under: SHA-256 of both (the same material, one key)."""
    digest = hashlib.sha256(chain.chain_pem.encode())
    digest.update(b"\0")
    digest.update(chain.key_pem.encode())
    return digest.hexdigest()


def _chains(spec: ListenerSpec) -> Iterator[CertChain]:
    yield spec.default_cert
    yield from spec.additional_certs


class DeltaEncoder:
    """The parent's memory of what the workers hold, and the changes that move it on."""

    def __init__(self, limits: SharedLimits | None = None) -> None:
        """`limits`: the shared limits whose slots the listeners get (None: no slots)."""
        self._limits = limits
        self._slots: dict[str, tuple[int, int]] = {}
        self._free_slots: deque[int] = deque()
        self.slots_used = 0  # slots 0 .. slots_used - 1 have been given out
        self._specs: dict[str, ListenerSpec] = {}
        self._revision = 0
        self._keys: dict[CertChain, str] = {}
        self._material: dict[str, CertChain] = {}
        self._uses: Counter[str] = Counter()
        self._ticket_keys: tuple[TicketKey, ...] = ()
        self._challenges: tuple[ChallengeCert, ...] = ()

    def change(self, snapshot: Snapshot) -> Change:
        """The step from the last snapshot to `snapshot`; afterwards `snapshot` is current."""
        wanted = {spec.listener_id: spec for spec in snapshot.listeners}
        removed = tuple(lid for lid in self._specs if lid not in wanted)
        changed = [
            spec for lid, spec in wanted.items()
            if (old := self._specs.get(lid)) is not spec and old != spec
        ]
        self._give_slots([s.listener_id for s in changed if s.listener_id not in self._slots])
        new: dict[str, CertChain] = {}
        for spec in changed:
            for chain in _chains(spec):
                key = self._key(chain)
                if key not in self._material:
                    self._material[key] = new[key] = chain
                self._uses[key] += 1
        released = [self._specs[lid] for lid in removed]
        released += [self._specs[s.listener_id] for s in changed if s.listener_id in self._specs]
        forget = self._release(released)
        for lid in removed:
            del self._specs[lid]
            slot = self._slots.pop(lid, None)
            if slot is not None:
                self._free_slots.append(slot[0])
        self._specs.update((spec.listener_id, spec) for spec in changed)
        self._revision = snapshot.revision
        tickets = snapshot.ticket_keys if snapshot.ticket_keys != self._ticket_keys else None
        self._ticket_keys = snapshot.ticket_keys
        challenges = snapshot.challenges if snapshot.challenges != self._challenges else None
        self._challenges = snapshot.challenges
        return Change(
            snapshot.revision, self._wire(changed), removed, new, tuple(forget),
            ticket_keys=tickets, challenges=challenges,
        )

    def full(self, *, prepare: bool = False) -> Change:
        """The whole current state, for a worker that has nothing yet (to `prepare` only:
        see `Change`)."""
        return Change(
            self._revision, self._wire(self._specs.values()), materials=dict(self._material),
            full=True, ticket_keys=self._ticket_keys, prepare=prepare,
            challenges=self._challenges,
        )

    def _give_slots(self, lids: list[str]) -> None:
        """A limits slot for each of the new listeners `lids` (all or, when too few are left,
        none: ValueError)."""
        if self._limits is None:
            return
        fresh = self._limits.capacity - self.slots_used
        if len(lids) > fresh + len(self._free_slots):
            raise ValueError(
                f"{len(self._slots) + len(lids)} listeners are more than the proxy's "
                f"{self._limits.capacity} connection-limit slots"
            )
        for lid in lids:
            if self.slots_used < self._limits.capacity:
                slot = self.slots_used
                self.slots_used += 1
            else:
                slot = self._free_slots.popleft()
            self._slots[lid] = (slot, self._limits.assign(slot))

    def _key(self, chain: CertChain) -> str:
        key = self._keys.get(chain)
        if key is None:
            key = self._keys[chain] = material_key(chain)
        return key

    def _release(self, specs: Iterable[ListenerSpec]) -> list[str]:
        """Drop one use of each certificate of `specs`; forget and return the keys now unused."""
        unused = []
        for spec in specs:
            for chain in _chains(spec):
                key = self._keys[chain]
                self._uses[key] -= 1
                if self._uses[key] == 0:
                    unused.append(key)
                    del self._uses[key]
                    del self._keys[self._material.pop(key)]
        return unused

    def _wire(self, specs: Iterable[ListenerSpec]) -> tuple[WireListener, ...]:
        return tuple(
            WireListener(
                dataclasses.replace(spec, default_cert=_NO_CERT, additional_certs=()),
                self._keys[spec.default_cert],
                tuple(self._keys[c] for c in spec.additional_certs),
                *self._slots.get(spec.listener_id, (-1, 0)),
            )
            for spec in specs
        )


class Materials:
    """A worker's certificate material by key, and the specs rebuilt from wire listeners."""

    def __init__(self) -> None:
        self._chains: dict[str, CertChain] = {}
        # The limits slot and generation of each listener (`WireListener`), by id.
        self.slots: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._chains)

    def receive(self, change: Change) -> list[ListenerSpec]:
        """Take the change's new material; return its listeners as whole specs. After a
        full state only the material its listeners use is kept (a full state may leave out
        material the worker already holds, e.g. from a `prepare` change)."""
        self._chains.update(change.materials)
        if change.full:
            self.slots.clear()
        for lid in change.removed:
            self.slots.pop(lid, None)
        for wire in change.listeners:
            self.slots[wire.spec.listener_id] = (wire.limit_slot, wire.limit_generation)
        specs = [
            dataclasses.replace(
                wire.spec,
                default_cert=self._chains[wire.default_key],
                additional_certs=tuple(self._chains[k] for k in wire.additional_keys),
            )
            for wire in change.listeners
        ]
        if change.full:
            used = {k for w in change.listeners for k in (w.default_key, *w.additional_keys)}
            self._chains = {k: v for k, v in self._chains.items() if k in used}
        for key in change.forget:
            self._chains.pop(key, None)
        return specs
