"""Length-prefixed frames between the parent and a worker: a partial read cannot break them.

Rules:
- A frame is an 8-byte big-endian length, then that many bytes of one pickled message.
- Either side may receive a frame in any number of pieces (a non-blocking socket wakes the
  reader between two writes of one large message); `FrameReader` keeps the pieces until the
  frame is whole. Only end-of-file means the other side is gone.
- A large argument (a change) is `pack`ed once, whatever the number of workers it goes to,
  and `unpack`ed by the worker.
"""

from __future__ import annotations

import pickle
import struct

_HEADER = struct.Struct("!Q")
READ_SIZE = 1 << 20


def pack(value: object) -> bytes:
    """`value` pickled, to be sent as an argument of many requests."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> object:
    """A value from `pack`."""
    return pickle.loads(data)


def encode(message: object) -> bytes:
    """One whole frame holding `message`."""
    payload = pack(message)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Turns the bytes read so far into the messages they complete, in order."""

    __slots__ = ("_buffer", "_wanted")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._wanted: int | None = None

    def feed(self, data: bytes) -> list[object]:
        """Add `data`; return every message it completes (none while a frame is partial)."""
        self._buffer += data
        messages: list[object] = []
        while True:
            if self._wanted is None:
                if len(self._buffer) < _HEADER.size:
                    return messages
                (self._wanted,) = _HEADER.unpack_from(self._buffer)
                del self._buffer[: _HEADER.size]
            if len(self._buffer) < self._wanted:
                return messages
            payload = bytes(self._buffer[: self._wanted])
            del self._buffer[: self._wanted]
            self._wanted = None
            messages.append(unpack(payload))
