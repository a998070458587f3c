"""Type stub of the compiled `offload/tlscontext.pyx`."""

import ssl
from collections.abc import Callable, Sequence

class TlsContext:
    """The SSL contexts a listener's handshakes start from (see tlscontext.pyx)."""

    base: ssl.SSLContext
    additional: tuple[ssl.SSLContext, ...]
    def __init__(
        self,
        base: ssl.SSLContext,
        additional: Sequence[ssl.SSLContext] = (),
        lookup: Callable[[str | None], int | None] | None = None,
    ) -> None: ...
