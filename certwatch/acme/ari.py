"""ACME Renewal Information (RFC 9773): a certificate's ARI id, the window its server suggests
for renewing it, a time picked in that window, when to ask again (Retry-After), and a new
order that names the certificate it `replaces`.

A server offers ARI when its directory has `renewalInfo`; such a server also takes `replaces`.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import random
from dataclasses import dataclass

import josepy as jose
from acme import client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509

DEFAULT_RECHECK = dt.timedelta(hours=6)
"""When to ask again if the server sends no (usable) Retry-After (RFC 9773 §4.3.3)."""
SHORTEST_RECHECK = dt.timedelta(minutes=1)
LONGEST_RECHECK = dt.timedelta(days=1)
"""Retry-After is clamped to this range, as RFC 9773 §4.3.3 asks of clients."""
ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"


@dataclass(frozen=True)
class Window:
    """What the server said: its suggested window, the time picked in it, when to ask again."""

    start: dt.datetime
    end: dt.datetime
    renew_at: dt.datetime
    next_check_at: dt.datetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert: x509.Certificate) -> str:
    """base64url(AKI keyIdentifier) "." base64url(serial as DER INTEGER content bytes).

    ValueError when the certificate has no Authority Key Identifier with a key identifier.
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise ValueError("the certificate has no Authority Key Identifier") from exc
    if aki.key_identifier is None:
        raise ValueError("the certificate's Authority Key Identifier has no key identifier")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


def supported(acme: client.ClientV2) -> bool:
    """Whether the server's directory offers renewal information."""
    return "renewalInfo" in acme.directory.to_partial_json()


def pick(start: dt.datetime, end: dt.datetime, chance: float) -> dt.datetime:
    """A time in [start, end], `chance` in [0, 1) of the way (uniform when random)."""
    return start + max(end - start, dt.timedelta(0)) * chance


def next_check(retry_after: str | None, now: dt.datetime) -> dt.datetime:
    """When to ask again: Retry-After (seconds or an HTTP date) clamped to one minute .. one
    day after `now`; six hours when it is absent or unreadable."""
    wait = DEFAULT_RECHECK
    value = (retry_after or "").strip()
    if value.isdigit():
        wait = dt.timedelta(seconds=int(value))
    elif value:
        try:
            wait = email.utils.parsedate_to_datetime(value) - now
        except (TypeError, ValueError):
            wait = DEFAULT_RECHECK
    return now + min(max(wait, SHORTEST_RECHECK), LONGEST_RECHECK)


def fetch(acme: client.ClientV2, cert: x509.Certificate, now: dt.datetime) -> Window:
    """GET the certificate's renewal information and pick a time in its window.

    Raises what acme's network raises (`requests.RequestException`, `messages.Error`) and
    `jose.DeserializationError` for a body that is not a RenewalInfo.
    """
    url = f"{str(acme.directory['renewalInfo']).rstrip('/')}/{cert_id(cert)}"
    response = acme.net.get(url, content_type="application/json")
    info = messages.RenewalInfo.from_json(response.json())
    start = info.suggested_window.start.astimezone(dt.UTC)
    end = info.suggested_window.end.astimezone(dt.UTC)
    if end < start:
        raise jose.DeserializationError(f"renewal window ends before it starts ({url})")
    return Window(
        start=start,
        end=end,
        renew_at=pick(start, end, random.random()),
        next_check_at=next_check(response.headers.get("Retry-After"), now),
    )


class _ReplacingOrder(messages.NewOrder):
    """A newOrder payload with RFC 9773's `replaces` (acme's NewOrder has no such field)."""

    replaces: str = jose.field("replaces", omitempty=True)


def new_order(acme: client.ClientV2, csr_pem: bytes, replaces: str) -> messages.OrderResource:
    """`acme.new_order(csr_pem)`, naming the certificate (ARI id) this order replaces; a plain
    new order when the server says that certificate was replaced already (an earlier order
    whose certificate never arrived here), so a renewal never gets stuck on `replaces`."""
    csr = x509.load_pem_x509_csr(csr_pem)
    dns_names, _ = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    identifiers = [
        messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in dns_names
    ]
    payload = _ReplacingOrder(identifiers=identifiers, replaces=replaces)
    try:
        response = acme._post(acme.directory["newOrder"], payload)
    except acme_errors.ConflictError:  # 409: acme drops the body, alreadyReplaced (§5)
        return acme.new_order(csr_pem)
    except messages.Error as exc:
        if exc.typ != ALREADY_REPLACED:
            raise
        return acme.new_order(csr_pem)
    body = messages.Order.from_json(response.json())
    authorizations = [
        acme._authzr_from_response(acme._post_as_get(url), uri=url)
        for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body,
        uri=response.headers.get("Location"),
        authorizations=authorizations,
        csr_pem=csr_pem,
    )
