"""One ACME order: a fresh key and CSR, every authorization answered with the configured
challenge (taken down again whatever happens), then the whole chain the server issued."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import josepy as jose
import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors

from certwatch.acme import ari
from certwatch.acme.challenges import ChallengeError, HttpResponder, run_hook
from certwatch.config import AcmeConfig

ORDER_SECONDS = 120
ORDER_FAULTS: tuple[type[Exception], ...] = (
    acme_errors.Error,
    messages.Error,
    requests.RequestException,
    ChallengeError,
    jose.DeserializationError,
)
"""What an order may fail with: the request is then `Failed` with the message as its reason."""

CHALLENGE_TYPES: dict[str, type[challenges.KeyAuthorizationChallenge]] = {
    "http-01": challenges.HTTP01,
    "dns-01": challenges.DNS01,
}


@dataclass(frozen=True)
class Issued:
    """What an order returned: the chain as the server sent it (leaf first) and its key."""

    chain_pem: str
    key_pem: str


class Solver:
    """Puts up and takes down the configured challenge for one authorization."""

    def __init__(self, config: AcmeConfig, key: jose.JWK, http: HttpResponder | None) -> None:
        self._config = config
        self.key = key
        self._http = http

    @contextmanager
    def answer(self, challb: messages.ChallengeBody, domain: str) -> Iterator[None]:
        """The challenge is up while the block runs."""
        chall = challb.chall
        validation = chall.validation(self.key)
        if isinstance(chall, challenges.HTTP01):
            if self._http is None:
                raise ChallengeError("the http-01 responder is not running")
            self._http.put(chall.encode("token"), validation)
            try:
                yield
            finally:
                self._http.drop(chall.encode("token"))
            return
        hook, name = self._config.dns_hook or "", chall.validation_domain_name(domain)
        run_hook(hook, "set", name, validation)
        try:
            yield
        finally:
            run_hook(hook, "unset", name, validation)


def _pick(authz: messages.AuthorizationResource, kind: str) -> messages.ChallengeBody:
    wanted = CHALLENGE_TYPES[kind]
    for challb in authz.body.challenges:
        if isinstance(challb.chall, wanted):
            return challb
    raise ChallengeError(
        f"the ACME server offers no {kind} challenge for {authz.body.identifier.value}"
    )


def order(
    acme: client.ClientV2,
    solver: Solver,
    kind: str,
    names: Sequence[str],
    key_pem: bytes,
    replaces: str | None = None,
) -> Issued:
    """Order a certificate for `names`, answering every authorization with `kind`; with
    `replaces` (an ARI certificate id) the order names the certificate it renews."""
    csr = crypto_util.make_csr(key_pem, list(names))
    orderr = acme.new_order(csr) if replaces is None else ari.new_order(acme, csr, replaces)
    with ExitStack() as up:
        for authz in orderr.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            challb = _pick(authz, kind)
            up.enter_context(solver.answer(challb, authz.body.identifier.value))
            acme.answer_challenge(challb, challb.chall.response(solver.key))
        # acme compares its deadline with the naive local clock.
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_SECONDS)  # noqa: DTZ005
        done = acme.poll_and_finalize(orderr, deadline)
    return Issued(chain_pem=done.fullchain_pem, key_pem=key_pem.decode())
