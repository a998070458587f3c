"""Type stub of the compiled `offload/connection.pyx`."""

import asyncio
from typing import Any

READ_BUFFER_SIZE: int

# Not a subclass at run time: uvloop takes any object with the buffered protocol's methods.
class ClientSide(asyncio.BufferedProtocol):
    """The client half of a spliced connection."""

    listener: Any
    backend: Any
    def __init__(self, listener: Any) -> None: ...
    def cut(self) -> None: ...
    def close(self) -> None: ...
    def finish(self) -> None: ...
    def on_deadline(self, now: float) -> None: ...
