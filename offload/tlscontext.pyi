"""Type stub of the compiled `offload/tlscontext.pyx`."""

import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence

def set_ciphersuites(context: ssl.SSLContext, suites: str) -> None: ...
def set_client_ca_list(context: ssl.SSLContext, ca_pem: str) -> None: ...
def alpn_wire(protocols: Sequence[str]) -> bytes: ...

class Challenges:
    """A worker's pending ACME tls-alpn-01 challenge contexts by name (see tlscontext.pyx)."""

    def set(self, contexts: Mapping[str, ssl.SSLContext]) -> None: ...
    def __len__(self) -> int: ...

class TicketKeys:
    """A worker's session ticket keys, newest first (see tlscontext.pyx)."""

    def set(self, keys: Iterable[bytes]) -> None: ...
    def __len__(self) -> int: ...

class TlsContext:
    """The SSL contexts a listener's handshakes start from (see tlscontext.pyx)."""

    base: ssl.SSLContext
    additional: tuple[ssl.SSLContext, ...]
    tickets: TicketKeys | None
    challenges: Challenges | None
    def __init__(
        self,
        base: ssl.SSLContext,
        additional: Sequence[ssl.SSLContext] = (),
        lookup: Callable[[str | None], int | None] | None = None,
        tickets: TicketKeys | None = None,
        session_id_context: bytes | None = None,
        alpn: bytes | None = None,
        challenges: Challenges | None = None,
    ) -> None: ...
