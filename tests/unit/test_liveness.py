"""Which server names the live check probes after a swap (pure, no sockets)."""

from __future__ import annotations

from certwatch.rotation.liveness import probe_names
from certwatch.store.models import Certificate
from tests.certfactory import make_pki


def _row(cert_id: str, *names: str) -> Certificate:
    issued = make_pki("liveness").leaf(*names)
    return Certificate(
        id=cert_id, chain_pem=issued.chain_pem, sans=list(names), common_name=names[0]
    )


def test_default_is_probed_without_sni_and_on_names_no_additional_takes() -> None:
    """The default is probed with no SNI and on each of its names that no additional
    certificate answers; a wildcard is probed through a substituted label."""
    additional = [_row("cert-b", "b.example.com")]
    names = probe_names(["a.example.com", "b.example.com", "*.example.org"], additional, None)
    assert names == [None, "a.example.com", "probe.example.org"]


def test_additional_is_probed_only_where_sni_selects_it() -> None:
    """An additional certificate is probed on the names SNI routes to it, not on names an
    older additional certificate already answers exactly."""
    older, new = (
        _row("cert-old", "c.example.com"),
        _row("cert-new", "c.example.com", "d.example.com"),
    )
    assert probe_names(["c.example.com", "d.example.com"], [older, new], "cert-new") == [
        "d.example.com"
    ]
