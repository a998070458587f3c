"""Build the data plane's desired state (`offload.spec.Snapshot`) from the store.

A change's cost follows the change, not the inventory: every change stamps the listeners
whose inputs it touched with its revision (`changes.stamps`), so `SnapshotBuilder` reads the
id and stamp of each running listener and the inputs (row, certificate links, server
group's servers and health check) of only those whose stamp moved; unchanged listeners keep
the very same `ListenerSpec` object, so the proxy's diff skips them at once. Certificates
never change once stored, so each one's served chain and decrypted key are read once, and
forgotten when no listener uses them.

Session ticket keys are shared by every worker of every node: one key per 12-hour period
(epoch), created sealed in the store by the first node that builds a snapshot in it (a
second node's insert of the same epoch does nothing), so all nodes serve the same keys. A
snapshot carries the current epoch's key (it encrypts) and the previous one (still
accepted for its last 12 hours); older keys are deleted. `stale()` tells the node's sync
that a new epoch began, so the keys rotate even when nothing else changes.

The pending ACME tls-alpn-01 challenges (`acme_challenges`, a handful of rows while an order
runs) are read on every build, each one's key decrypted once, so every worker of every node
gets them through the same path as the listeners.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from certwatch import clock
from certwatch.config import ProxyConfig
from certwatch.inventory.policies import resolve_policy
from certwatch.pki import x509
from certwatch.store.db import KeyBox
from certwatch.store.models import (
    AcmeChallenge,
    Certificate,
    Listener,
    ListenerCertificate,
    ServerGroup,
    SessionTicketKey,
    StateRevision,
)
from offload.spec import (
    Backend,
    CertChain,
    ChallengeCert,
    HealthCheck,
    ListenerSpec,
    Snapshot,
    TicketKey,
)

# SQLite allows 999 bound parameters in one statement by default.
_IN_CHUNK = 500
_NO_CERT = CertChain("", "")
TICKET_KEY_PERIOD = 12 * 3600


def ticket_epoch(now: dt.datetime) -> int:
    """The 12-hour period `now` is in: its key encrypts the tickets issued then."""
    return int(now.timestamp()) // TICKET_KEY_PERIOD


def current_revision(session: Session) -> int:
    """The revision of what the proxy should serve (0 before any change)."""
    row = session.get(StateRevision, 1)
    return row.revision if row else 0


def lock_revision(session: Session) -> StateRevision:
    """Take the store's change lock (the revision row, until the transaction ends): changes
    from every node run one after the other, each reading what the previous one committed."""
    row = session.get(StateRevision, 1, with_for_update=True, populate_existing=True)
    if row is None:  # a store older than the row's migration, or a fresh test schema
        row = StateRevision(id=1, revision=0)
        session.add(row)
        session.flush()
    return row


def bump_revision(session: Session) -> int:
    """Count one more change of what the proxy serves, in the caller's transaction."""
    row = lock_revision(session)
    row.revision += 1
    session.add(row)
    session.flush()
    return row.revision


class _Row(NamedTuple):
    """The listener columns a spec depends on."""

    id: str
    address: str
    port: int
    protocol: str
    server_group_id: str
    security_policy_id: str
    ca_enabled: bool
    idle_timeout: int
    alpn_enabled: bool
    alpn_policy: str | None
    proxy_protocol_enabled: bool
    cps: int
    max_connections: int


class _Inputs(NamedTuple):
    """Everything one listener's spec is built from; equal inputs, equal spec."""

    row: _Row
    backends: tuple[Backend, ...]
    health_check: HealthCheck | None
    defaults: tuple[str, ...]
    additional: tuple[str, ...]
    cas: tuple[str, ...]

    def certificate_ids(self) -> tuple[str, ...]:
        """The certificates the spec serves or trusts."""
        return (*self.defaults[:1], *self.additional, *(self.cas if self.row.ca_enabled else ()))

    def servable(self) -> bool:
        """A TLS listener without a default certificate cannot be served."""
        return self.row.protocol != "TCPSSL" or bool(self.defaults)


_RUNNING = "SELECT id, revision FROM listeners WHERE status = 'Running'"


class SnapshotBuilder:
    """Snapshots of every running listener, rebuilding only the specs of the listeners
    stamped (`changes.stamps`) since they were last built."""

    def __init__(self, keybox: KeyBox, proxy: ProxyConfig) -> None:
        self._keybox = keybox
        self._proxy = proxy
        # listener id -> (its stamp, its inputs, its spec)
        self._specs: dict[str, tuple[int, _Inputs, ListenerSpec]] = {}
        self._chains: dict[str, CertChain] = {}
        self._uses: Counter[str] = Counter()
        self._ticket_keys: dict[int, TicketKey] = {}
        self._epoch: int | None = None
        self._pending: list[str] = []
        self._released: set[str] = set()
        # (name, sealed key) -> the challenge as served
        self._challenges: dict[tuple[str, bytes], ChallengeCert] = {}

    def stale(self) -> bool:
        """True when a new ticket key period began since the last snapshot was built."""
        return self._epoch != ticket_epoch(clock.now())

    def build(self, session: Session, revision: int) -> Snapshot:
        """The snapshot at `revision` of the store as `session` sees it.

        Reads the id and stamp of every running listener (two small columns), then the
        inputs of only those whose stamp moved; a change's cost follows the change.
        """
        connection = session.connection()
        running: dict[str, int] = dict(connection.exec_driver_sql(_RUNNING).fetchall())
        for lid in [lid for lid in self._specs if lid not in running]:
            self._drop(lid)
        moved = sorted(
            lid for lid, stamp in running.items()
            if lid not in self._specs or self._specs[lid][0] != stamp
        )
        inputs = _read_inputs(connection, moved)
        self._load_chains(session, (c for i in inputs.values() for c in i.certificate_ids()))
        for lid in moved:
            given = inputs.get(lid)
            if given is None:  # stopped or deleted since the first read
                self._drop(lid)
                continue
            known = self._specs.get(lid)
            spec = known[2] if known and known[1] == given else self._spec(session, given)
            self._drop(lid)
            self._uses.update(given.certificate_ids())
            self._specs[lid] = (running[lid], given, spec)
        self._pending = moved
        self._forget_unused_chains()
        specs = [spec for lid, (_, given, spec) in sorted(self._specs.items()) if given.servable()]
        return Snapshot(
            revision, tuple(specs), self._tickets(session), self._read_challenges(session)
        )

    def discard_pending(self) -> None:
        """The change the last build saw was rolled back: build its listeners afresh next time."""
        for lid in self._pending:
            self._drop(lid)
        self._pending = []
        self._forget_unused_chains()

    def _drop(self, lid: str) -> None:
        known = self._specs.pop(lid, None)
        if known is not None:
            released = known[1].certificate_ids()
            self._uses.subtract(released)
            self._released.update(released)

    def _forget_unused_chains(self) -> None:
        """Forget the chains of certificates no listener uses any more."""
        for cid in self._released:
            if self._uses[cid] <= 0:
                self._chains.pop(cid, None)
                del self._uses[cid]
        self._released.clear()

    def _tickets(self, session: Session) -> tuple[TicketKey, ...]:
        """The current period's ticket key (created if no node did yet), then the previous
        one; keys older than that are deleted."""
        now = clock.now()
        epoch = ticket_epoch(now)
        wanted = (epoch, epoch - 1)
        query = sa_select(col(SessionTicketKey.epoch), col(SessionTicketKey.key_sealed)).where(
            col(SessionTicketKey.epoch).in_(wanted)
        )
        stored: dict[int, bytes] = {e: k for e, k in session.execute(query)}
        if epoch not in stored:
            sealed = self._keybox.seal(TicketKey.generate().material.hex())
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else (
                sqlite.insert
            )
            session.execute(
                insert(SessionTicketKey)
                .values(epoch=epoch, key_sealed=sealed, created_at=now)
                .on_conflict_do_nothing(index_elements=["epoch"])
            )
            session.execute(
                delete(SessionTicketKey).where(col(SessionTicketKey.epoch) < epoch - 1)
            )
            stored = {e: k for e, k in session.execute(query)}
        self._ticket_keys = {
            e: self._ticket_keys.get(e) or TicketKey(bytes.fromhex(self._keybox.open(sealed)))
            for e, sealed in stored.items()
        }
        self._epoch = epoch
        return tuple(self._ticket_keys[e] for e in wanted if e in self._ticket_keys)

    def _read_challenges(self, session: Session) -> tuple[ChallengeCert, ...]:
        """The pending tls-alpn-01 challenges, by name; a key is decrypted once per row."""
        rows = session.execute(
            sa_select(
                col(AcmeChallenge.domain_name), col(AcmeChallenge.chain_pem),
                col(AcmeChallenge.key_sealed),
            ).order_by(col(AcmeChallenge.domain_name))
        ).all()
        known, self._challenges = self._challenges, {}
        for name, chain_pem, sealed in rows:
            self._challenges[(name, sealed)] = known.get((name, sealed)) or ChallengeCert(
                name, chain_pem, self._keybox.open(sealed)
            )
        return tuple(self._challenges.values())

    def _load_chains(self, session: Session, ids: Iterable[str]) -> None:
        """Read and decrypt, once, the certificates not read before."""
        missing = sorted({cid for cid in ids if cid not in self._chains})
        for start in range(0, len(missing), _IN_CHUNK):
            chunk = missing[start : start + _IN_CHUNK]
            for cid, pem, sealed, sans, cn in session.execute(
                sa_select(
                    col(Certificate.id), col(Certificate.chain_pem),
                    col(Certificate.key_encrypted), col(Certificate.sans),
                    col(Certificate.common_name),
                ).where(col(Certificate.id).in_(chunk))
            ):
                self._chains[cid] = CertChain(
                    chain_pem=pem,
                    key_pem=self._keybox.open(sealed) if sealed else "",
                    names=x509.host_names(sans, cn),
                )

    def _spec(self, session: Session, given: _Inputs) -> ListenerSpec:
        row, chains = given.row, self._chains
        policy = resolve_policy(session, row.security_policy_id)
        cas = given.cas if row.ca_enabled else ()
        return ListenerSpec(
            listener_id=row.id,
            address=row.address,
            port=row.port,
            protocol=row.protocol,
            default_cert=chains[given.defaults[0]] if given.defaults else _NO_CERT,
            additional_certs=tuple(chains[c] for c in given.additional),
            ca_pem="".join(chains[c].chain_pem for c in cas) if cas else None,
            tls_versions=policy.tls_versions,
            ciphers=policy.ciphers,
            backends=given.backends,
            server_group_id=row.server_group_id,
            health_check=given.health_check,
            idle_timeout=float(row.idle_timeout),
            handshake_timeout=self._proxy.handshake_timeout,
            connect_timeout=self._proxy.connect_timeout,
            alpn_policy=row.alpn_policy if row.alpn_enabled else None,
            proxy_protocol=row.proxy_protocol_enabled,
            cps=row.cps,
            max_connections=row.max_connections,
        )


def _read_inputs(connection: Connection, ids: list[str]) -> dict[str, _Inputs]:
    """The inputs of the listeners among `ids`, read in chunks (Core: no ORM rows)."""
    listeners, links_table, groups_table = (
        Listener.__table__, ListenerCertificate.__table__, ServerGroup.__table__,  # type: ignore[attr-defined]
    )
    inputs: dict[str, _Inputs] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        rows = connection.execute(
            sa_select(*(listeners.c[name] for name in _Row._fields)).where(
                listeners.c.id.in_(chunk), listeners.c.status == "Running"
            )
        ).fetchall()
        links: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for lid, role, cid in connection.execute(
            sa_select(links_table.c.listener_id, links_table.c.role, links_table.c.certificate_id)
            .where(links_table.c.listener_id.in_(chunk))
            .order_by(links_table.c.created_at, links_table.c.certificate_id)
        ):
            links[lid][role].append(cid)
        groups = {row.server_group_id for row in rows}
        servers = {
            gid: (_backends(_json(group)), _health_check(_json(check)))
            for gid, group, check in connection.execute(
                sa_select(
                    groups_table.c.id, groups_table.c.servers, groups_table.c.health_check
                ).where(groups_table.c.id.in_(sorted(groups)))
            )
        }
        for values in rows:
            row = _Row(*values)._replace(
                ca_enabled=bool(values.ca_enabled), alpn_enabled=bool(values.alpn_enabled),
                proxy_protocol_enabled=bool(values.proxy_protocol_enabled),
            )
            roles = links.get(row.id, {})
            backends, health_check = servers.get(row.server_group_id, ((), None))
            inputs[row.id] = _Inputs(
                row, backends, health_check, tuple(roles.get("default", ())),
                tuple(roles.get("additional", ())), tuple(roles.get("ca", ())),
            )
    return inputs


def _json(value: Any) -> Any:
    """A JSON column's value (some drivers hand back the text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _health_check(stored: dict[str, Any] | None) -> HealthCheck | None:
    """The proxy's checks of a group's stored HealthCheckConfig; None when off."""
    if not stored or not stored["HealthCheckEnabled"]:
        return None
    return HealthCheck(
        interval=float(stored["HealthCheckInterval"]),
        connect_timeout=float(stored["HealthCheckConnectTimeout"]),
        healthy_threshold=int(stored["HealthyThreshold"]),
        unhealthy_threshold=int(stored["UnhealthyThreshold"]),
        connect_port=int(stored["HealthCheckConnectPort"]) or None,
    )


def _backends(servers: list[dict[str, Any]]) -> tuple[Backend, ...]:
    return tuple(
        Backend(s["ServerIp"], s["Port"], s["Weight"]) for s in servers if s["Weight"] > 0
    )

