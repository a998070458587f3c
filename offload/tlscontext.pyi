"""Type stub of the compiled `offload/tlscontext.pyx`."""

import ssl
from collections.abc import Callable, Iterable, Sequence

def set_ciphersuites(context: ssl.SSLContext, suites: str) -> None: ...

class TicketKeys:
    """A worker's session ticket keys, newest first (see tlscontext.pyx)."""

    def set(self, keys: Iterable[bytes]) -> None: ...
    def __len__(self) -> int: ...

class TlsContext:
    """The SSL contexts a listener's handshakes start from (see tlscontext.pyx)."""

    base: ssl.SSLContext
    additional: tuple[ssl.SSLContext, ...]
    tickets: TicketKeys | None
    def __init__(
        self,
        base: ssl.SSLContext,
        additional: Sequence[ssl.SSLContext] = (),
        lookup: Callable[[str | None], int | None] | None = None,
        tickets: TicketKeys | None = None,
        session_id_context: bytes | None = None,
    ) -> None: ...
