"""The background order runner: on the leader, every due certificate request is ordered, one
at a time; an attempt ends `Issued` or `Failed` (retried later, see `requests`). A renewal
names the certificate it replaces when the server offers renewal information (`ari`). The
first failure of a streak, and the issue that ends it, record one alert each (`alerts`), which
every pass sends until each alert URL took it.

`app/service.py` builds it; `certwatch serve` starts and stops it. `run_due` is one pass,
which tests call directly.
"""

from __future__ import annotations

import logging
import threading

from acme import messages
from acme.client import ClientV2
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter

from certwatch import clock, errors
from certwatch.acme import account, alerts, ari, issue, requests
from certwatch.acme.alpn import StoreChallenges
from certwatch.acme.challenges import HttpResponder
from certwatch.acme.keys import new_key_pem
from certwatch.acme.orders import ORDER_FAULTS, Issued, Solver, order
from certwatch.node import Node
from certwatch.store.db import transaction
from certwatch.store.models import Certificate, CertificateRequest

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
FAULTS: tuple[type[Exception], ...] = (*ORDER_FAULTS, errors.ApiError)
"""An attempt ending in one of these is `Failed` (and retried); anything else is a bug."""


def orders_counter(registry: CollectorRegistry) -> Counter:
    """`certwatch_acme_orders_total{result}`, both results exported from the start."""
    counter = Counter(
        "certwatch_acme_orders", "ACME orders by result", ["result"], registry=registry
    )
    for result in ("issued", "failed"):
        counter.labels(result=result)
    return counter


def _replaces(acme: ClientV2, old_pem: str | None) -> str | None:
    """The ARI id of the certificate a renewal replaces, when the server takes `replaces`."""
    if old_pem is None or not ari.supported(acme):
        return None
    try:
        return ari.cert_id(x509.load_pem_x509_certificate(old_pem.encode()))
    except ValueError as exc:
        log.warning("renewal without replaces: %s", exc)
        return None


class OrderRunner:
    """Orders due certificate requests on a background thread while this node leads."""

    def __init__(self, node: Node, orders: Counter) -> None:
        self._node = node
        self._orders = orders
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="acme-orders", daemon=True)
        self._http: HttpResponder | None = None

    def start(self) -> OrderRunner:
        """Start the http-01 responder (with that challenge) and the runner thread."""
        config = self._node.config.acme
        if config.challenge == "http-01":
            self._http = HttpResponder(config.http_listen).start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the attempt in progress, and close the responder."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._http is not None:
            self._http.stop()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            if not self._node.is_leader():
                continue
            try:
                self.run_due()
            except Exception:
                log.exception("ACME order pass failed")

    def run_due(self) -> int:
        """Attempt every request that is due now, then send the failure-streak alerts some
        alert URL still lacks; how many requests were attempted."""
        with transaction(self._node.engine) as session:
            ids = [row.id for row in requests.due(session, clock.now())]
        for request_id in ids:
            if self._stop.is_set():
                break
            self.attempt(request_id)
        alerts.deliver_pending(self._node.engine, self._node.monitoring.notifier)
        return len(ids)

    def attempt(self, request_id: str) -> None:
        """Order the certificate of one request and deliver it, or record why not."""
        node = self._node
        with transaction(node.engine) as session:
            row = session.get(CertificateRequest, request_id)
            if row is None:
                return
            names, key_type = list(row.domain_names), row.key_type
            old = session.get(Certificate, row.renews_certificate_id or "")
            old_pem = None if old is None else old.chain_pem
        try:
            try:
                issued = self._order(names, key_type, old_pem)
            except messages.Error as exc:
                if exc.code != "accountDoesNotExist":
                    raise
                log.warning(
                    "the ACME server no longer knows this store's account (%s); registering a "
                    "new one", exc, extra={"certificate_request_id": request_id},
                )
                account.forget(node)
                issued = self._order(names, key_type, old_pem)
            issue.deliver(node, request_id, issued)
        except FAULTS as exc:
            self._failed(request_id, f"{type(exc).__name__}: {exc}")
            return
        self._orders.labels(result="issued").inc()
        log.info(
            "certificate request %s issued for %s", request_id, ", ".join(names),
            extra={"certificate_request_id": request_id},
        )

    def _order(self, names: list[str], key_type: str, old_pem: str | None) -> Issued:
        """One order under this store's account (registered first if it has none)."""
        node = self._node
        acme, key = account.connect(node)
        solver = Solver(node.config.acme, key, self._http, StoreChallenges(node))
        replaces = _replaces(acme, old_pem)
        kind = node.config.acme.challenge
        return order(acme, solver, kind, names, new_key_pem(key_type), replaces)

    def _failed(self, request_id: str, reason: str) -> None:
        self._orders.labels(result="failed").inc()
        now = clock.now()
        with transaction(self._node.engine) as session:
            row = session.get(CertificateRequest, request_id)
            if row is not None:
                requests.failed(session, row, reason, now)
                alerts.record_failure(session, row, now)
        log.warning(
            "certificate request %s failed: %s", request_id, reason,
            extra={"certificate_request_id": request_id},
        )

