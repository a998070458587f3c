"""Type stub of the compiled `offload/connection.pyx`."""

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import Any

READ_BUFFER_SIZE: int

class TlsContext:
    """The SSL contexts a listener's handshakes start from (see connection.pyx)."""

    base: ssl.SSLContext
    additional: tuple[ssl.SSLContext, ...]
    def __init__(
        self,
        base: ssl.SSLContext,
        additional: Sequence[ssl.SSLContext] = (),
        lookup: Callable[[str | None], int | None] | None = None,
    ) -> None: ...

# Not a subclass at run time: uvloop takes any object with the buffered protocol's methods.
class ClientSide(asyncio.BufferedProtocol):
    """The client half of a spliced connection."""

    listener: Any
    backend: Any
    def __init__(self, listener: Any) -> None: ...
    def close(self) -> None: ...
    def finish(self) -> None: ...
    def on_deadline(self, now: float) -> None: ...
