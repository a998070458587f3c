"""The API's HTTP connections: how long a client may take to send its request, and how many
connections may be open at once.

uvicorn bounds neither: its keep-alive timeout covers only the wait between two requests, so a
client that sends its request headers or body slowly (or nothing at all) holds a connection for
ever, and holds up a shutdown too. `LimitedH11Protocol` is uvicorn's h11 protocol with

- a header deadline: from the connection's start (or the first byte of a later request on a
  kept-alive connection) until the request's headers are complete;
- a body deadline: from then until the whole body has arrived;
- a cap on open connections: one more is answered 503 `TooManyConnections` and closed at once.

A connection past a deadline is closed with one debug line; the application, if it was reading
the body, sees the client disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from certwatch import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds to receive a request's headers, then its body; connections open at once."""

    header_timeout: float
    body_timeout: float
    max_connections: int


def _refusal(limit: int) -> bytes:
    """The whole 503 answer to a connection beyond the limit, in the API's error form."""
    failure = errors.TooManyConnections(
        f"the API already has {limit} connections open (api.max_connections); retry later"
    )
    body = {"RequestId": str(uuid.uuid4()), "Code": failure.code, "Message": failure.message}
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {failure.status} Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + payload


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a cap on open connections."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, or refuse it when the limit is reached; start the header
        deadline."""
        full = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if full:
            self.connections.discard(self)
            log.debug("refusing a connection from %s: %s open", self.client, len(self.connections))
            transport.write(_refusal(self.limits.max_connections))
            transport.close()
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does, then follow the request to its next phase."""
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        """Answered: no deadline until the next request starts (uvicorn's keep-alive)."""
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._arm(None)
        super().connection_lost(exc)

    def _current_phase(self) -> str | None:
        """'headers' while a request's headers are awaited, 'body' while its body is, else
        None (the application is answering, or a kept-alive connection waits between
        requests)."""
        if self.transport.is_closing():
            return None
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return "body"
        waiting_first = self.cycle is None
        if state is h11.IDLE and (waiting_first or self.conn.trailing_data[0]):
            return "headers"
        return None

    def _follow(self) -> None:
        phase = self._current_phase()
        if phase != self._phase:
            self._arm(phase)

    def _arm(self, phase: str | None) -> None:
        """Replace the deadline by the one of `phase` (None: no deadline)."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._phase, self._deadline = phase, None
        if phase is not None:
            limits = self.limits
            timeout = limits.header_timeout if phase == "headers" else limits.body_timeout
            self._deadline = self.loop.call_later(timeout, self._expire, phase, timeout)

    def _expire(self, phase: str, timeout: float) -> None:
        self._deadline = None
        log.debug(
            "closing the connection from %s: the request %s took longer than %gs",
            self.client,
            phase,
            timeout,
        )
        self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, held to `limits`."""

    class Limited(LimitedH11Protocol):
        """`LimitedH11Protocol` with this server's limits."""

    Limited.limits = limits
    return Limited
