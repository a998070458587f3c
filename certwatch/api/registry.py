"""The action registry: each API action is a typed request model and one handler function.

Handlers take an `ActionContext` (the change in progress, the node's parts) and the validated
request, and return the response fields. They raise `errors.ApiError` to refuse;
the dispatcher then rolls everything back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from certwatch.inventory.change import Change
from certwatch.node import Node
from certwatch.scan.run import Scanner

BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _not_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of address no TCP connection can use, or None (unspecified and loopback are
    fine: 0.0.0.0 and :: are every address)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return _not_unicast(mapped)
    if address.is_multicast:
        return "a multicast address"
    if address == BROADCAST:
        return "the broadcast address"
    if address.is_reserved and not (address.is_unspecified or address.is_loopback):
        return "a reserved address"
    return None


def _ip_address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from exc
    kind = _not_unicast(address)
    if kind is not None:
        raise ValueError(
            f"{value} is {kind}: TCP needs a unicast address, so nothing could ever connect "
            "there (use 0.0.0.0 or :: for every address)"
        )
    return str(address)


IpAddress = Annotated[str, AfterValidator(_ip_address)]
"""An IPv4 or IPv6 unicast (or unspecified) address, normalised."""


PARAMETERS = ConfigDict(strict=True, extra="forbid")
"""How every action parameter is read: no type coercion (`true` is not a port, `"no"` is not a
boolean, `5` is not a string), and unknown fields refused."""


class Request(BaseModel):
    """Base of every action's parameters: PascalCase names, strict types, unknown fields refused."""

    model_config = PARAMETERS


class ChangeRequest(Request):
    """Parameters every changing action takes."""

    DryRun: bool = False
    ClientToken: str | None = Field(default=None, min_length=1, max_length=64)


@dataclass(kw_only=True)
class ActionContext(Change):
    """What a handler may use: the change in progress (session, `now`, who acts), the node's
    parts, and its scanner (for `ScanNow`)."""

    node: Node
    scanner: Scanner

    @classmethod
    def of(cls, change: Change, node: Node, scanner: Scanner) -> ActionContext:
        """The context of a handler running inside `change`."""
        return cls(
            session=change.session,
            now=change.now,
            actor=change.actor,
            dry_run=change.dry_run,
            record_history=change.record_history,
            node=node,
            scanner=scanner,
        )


R = TypeVar("R", bound=Request)
Handler = Callable[[ActionContext, R], dict[str, Any]]


@dataclass(frozen=True)
class Action(Generic[R]):
    """One API action."""

    name: str
    request: type[R]
    handler: Handler[R]
    changing: bool
    summary: str
    own_transactions: bool = False
    own_codes: tuple[str, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        """Every error `Code` this action can answer: its own, and those of every action (and
        of every changing action)."""
        shared = COMMON_CODES + (CHANGING_CODES if self.changing else ())
        return tuple(dict.fromkeys(self.own_codes + shared))


COMMON_CODES = (
    "InvalidParameter",
    "InvalidJson",
    "RequestTooLarge",
    "Unauthorized",
    "InternalError",
    "StoreUnavailable",
    "TooManyConnections",
)
"""Codes any action may answer: a bad body or parameter, no token, the service's faults."""
CHANGING_CODES = (
    "ConcurrentModification",
    "ProxyUnavailable",
    "InvalidListener",
    "IdempotentParameterMismatch",
)
"""Codes any changing action may answer besides: a lost race, a data plane that did not take
(or refused) the change, a reused `ClientToken`."""
CERTIFICATE_CHECKS = (
    "InvalidCertificate",
    "InvalidPrivateKey",
    "KeyCertificateMismatch",
    "MissingPrivateKey",
    "NotACaCertificate",
    "InvalidChain",
)
"""The checks of a certificate and key brought in (upload, staging)."""
SERVING_RULES = (
    "CertificateNotFound",
    "IncorrectCertificateType",
    "CertificateExpired",
    "CertificateNotYetValid",
)
"""The rules of a certificate a listener is to serve."""

ACTIONS: dict[str, Action[Any]] = {}


def action(
    name: str,
    request: type[R],
    *,
    changing: bool,
    own_transactions: bool = False,
    codes: tuple[str, ...] = (),
) -> Callable[[Handler[R]], Handler[R]]:
    """Register a handler as the API action `name`.

    `codes`: the error codes of this action's own rules (the OpenAPI document lists them with
    the shared ones; the test suite fails on any other an action answers).
    `own_transactions`: a changing action that commits in several steps itself (rotation:
    swap, live probe, settle); it honours `ctx.dry_run`, and the dispatcher still handles
    `ClientToken`.
    """

    def register(handler: Handler[R]) -> Handler[R]:
        summary = (handler.__doc__ or name).strip().splitlines()[0]
        ACTIONS[name] = Action(name, request, handler, changing, summary, own_transactions, codes)
        return handler

    return register
