"""The echo backend used by tests, the benchmark and the demo."""

from __future__ import annotations

import asyncio
import socket

from offload.echo import EchoServer, serve_echo


def test_echo_server_thread_echoes_and_greets() -> None:
    """The threaded server sends its greeting, then echoes until the client closes."""
    with (
        EchoServer(greeting=b"hi") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        assert sock.recv(2) == b"hi"
        sock.sendall(b"abc")
        assert sock.recv(3) == b"abc"


def test_serve_echo_on_a_running_loop() -> None:
    """`serve_echo` serves on the caller's loop and echoes."""

    async def scenario() -> bytes:
        server = await serve_echo("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await reader.readexactly(4)
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return answer

    assert asyncio.run(scenario()) == b"ping"
