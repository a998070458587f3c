"""Half-close through a TLS listener, both ways, with a real TLS client.

The client is Python's `ssl.SSLObject` over memory BIOs on a plain socket, because a
blocking `SSLSocket` cannot keep reading after it sent close_notify.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from offload.spec import Backend
from offload.workers import ProxyControl
from tests.certfactory import Pki
from tests.integration.offload.conftest import client_context, listener, snapshot


class TlsClient:
    """A TLS client that can send close_notify and still read, or write after the
    server's close_notify."""

    def __init__(self, port: int, version: ssl.TLSVersion) -> None:
        ctx = client_context(versions=(version, version))
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._receive()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _receive(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def close_notify(self) -> None:
        """Send close_notify without waiting for the server's."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def read_to_end(self) -> tuple[bytes, str]:
        """Everything the server sends, and how it ended: "close_notify" or "eof"."""
        got = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._receive():
                    return got, "eof"
                continue
            except ssl.SSLZeroReturnError:
                return got, "close_notify"
            except ssl.SSLEOFError:
                return got, "eof"
            if not chunk:
                return got, "close_notify"
            got += chunk

    def close(self) -> None:
        self.sock.close()


@contextmanager
def one_shot_backend(serve: object) -> Iterator[tuple[Backend, dict[str, bytes]]]:
    """A backend that runs `serve(conn, record)` for one connection on a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    record: dict[str, bytes] = {}

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            serve(conn, record)  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield Backend("127.0.0.1", server.getsockname()[1]), record
    finally:
        thread.join(5)
        server.close()


def _read_until_eof(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def _answer_after_eof(conn: socket.socket, record: dict[str, bytes]) -> None:
    """Read the whole request (until EOF), then answer it and close."""
    request = _read_until_eof(conn)
    conn.sendall(b"got:" + request)


def _speak_first_then_listen(conn: socket.socket, record: dict[str, bytes]) -> None:
    """Send a greeting, end the sending side, then take what the client sends."""
    conn.sendall(b"hello")
    conn.shutdown(socket.SHUT_WR)
    record["received"] = _read_until_eof(conn)


VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.3", "tls1.2"])
def test_client_close_notify_still_gets_the_answer(
    control: ProxyControl, pki: Pki, version: ssl.TLSVersion
) -> None:
    """The client's close_notify reaches the backend as EOF; the answer the backend sends
    after that still reaches the client, then close_notify."""
    with one_shot_backend(_answer_after_eof) as (backend, _):
        spec = listener(pki.leaf("half.example.com"), (backend,))
        control.apply(snapshot(spec))
        client = TlsClient(spec.port, version)
        try:
            client.send(b"request")
            client.close_notify()
            assert client.read_to_end() == (b"got:request", "close_notify")
        finally:
            client.close()


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.3", "tls1.2"])
def test_backend_eof_still_takes_the_clients_bytes(
    control: ProxyControl, pki: Pki, version: ssl.TLSVersion
) -> None:
    """A backend that ends its sending side first: the client gets its bytes and
    close_notify, and what the client sends after that still reaches the backend."""
    with one_shot_backend(_speak_first_then_listen) as (backend, record):
        spec = listener(pki.leaf("first.example.com"), (backend,))
        control.apply(snapshot(spec))
        client = TlsClient(spec.port, version)
        try:
            assert client.read_to_end() == (b"hello", "close_notify")
            client.send(b"late words")
            client.close_notify()
        finally:
            client.close()
    assert record["received"] == b"late words"


def test_plain_tcp_backend_eof_still_takes_the_clients_bytes(
    control: ProxyControl, pki: Pki
) -> None:
    """The same on a plain TCP listener: FIN from the backend reaches the client, whose
    later bytes still reach the backend."""
    with one_shot_backend(_speak_first_then_listen) as (backend, record):
        spec = listener(pki.leaf("tcp-first.example.com"), (backend,), protocol="TCP")
        control.apply(snapshot(spec))
        with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
            assert _read_until_eof(sock) == b"hello"
            sock.sendall(b"late words")
            sock.shutdown(socket.SHUT_WR)
    assert record["received"] == b"late words"


def test_a_corrupt_record_ends_both_sides_after_what_came_before(
    control: ProxyControl, pki: Pki
) -> None:
    """Records before a corrupt one still reach the backend; then the client gets a fatal
    alert and the backend EOF."""
    connected = threading.Event()

    def serve(conn: socket.socket, record: dict[str, bytes]) -> None:
        connected.set()
        record["received"] = _read_until_eof(conn)

    with one_shot_backend(serve) as (backend, record):
        spec = listener(pki.leaf("corrupt.example.com"), (backend,))
        control.apply(snapshot(spec))
        client = TlsClient(spec.port, ssl.TLSVersion.TLSv1_3)
        try:
            client.send(b"good")
            assert connected.wait(5)
            client.sock.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # fails to decrypt
            with pytest.raises(ssl.SSLError, match="BAD_RECORD_MAC"):
                client.read_to_end()
        finally:
            client.close()
    assert record["received"] == b"good"
