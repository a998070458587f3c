"""The ACME account: its key is created on first use and kept sealed in the store, and it is
registered once (terms agreed, external account binding when configured) and reused."""

from __future__ import annotations

import josepy as jose
from acme import client, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certwatch import clock
from certwatch.config import AcmeConfig
from certwatch.node import Node
from certwatch.store.db import transaction
from certwatch.store.models import AcmeAccount

USER_AGENT = "certwatch"


class Network(client.ClientNetwork):
    """acme's network seam, trusting `acme.ca_bundle` for the server's HTTPS when set."""

    def __init__(self, key: jose.JWK, ca_bundle: str | None) -> None:
        super().__init__(key, user_agent=USER_AGENT)
        # requests takes a bundle path where acme's annotation says bool.
        self.verify_ssl = ca_bundle or True  # type: ignore[assignment]


def _new_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _register(acme: client.ClientV2, config: AcmeConfig, key: jose.JWK) -> None:
    eab = None
    if config.eab_kid:
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(),
            kid=config.eab_kid,
            hmac_key=config.eab_hmac_key,
            directory=acme.directory,
        )
    acme.new_account(
        messages.NewRegistration.from_data(
            email=config.email or None,
            terms_of_service_agreed=True,
            external_account_binding=eab,
        )
    )


def forget(node: Node) -> None:
    """Drop this store's account for the configured directory (the server no longer knows it,
    e.g. a test CA restarted); the next `connect` registers a new one."""
    url = node.config.acme.directory_url or ""
    with transaction(node.engine) as session:
        row = session.get(AcmeAccount, url)
        if row is not None:
            session.delete(row)


def connect(node: Node) -> tuple[client.ClientV2, jose.JWK]:
    """A client of the configured ACME server under this store's account, and the account key
    (registered now when this store has none for that directory)."""
    config = node.config.acme
    url = config.directory_url or ""
    with transaction(node.engine) as session:
        row = session.get(AcmeAccount, url)
        stored = None if row is None else (node.keybox.open(row.key_sealed), row.registration)
    key_pem = _new_key_pem() if stored is None else stored[0]
    key = jose.JWKRSA.load(key_pem.encode())
    net = Network(key, config.ca_bundle)
    acme = client.ClientV2(client.ClientV2.get_directory(url, net), net)
    if stored is not None:
        net.account = messages.RegistrationResource.json_loads(stored[1])
        return acme, key
    _register(acme, config, key)
    with transaction(node.engine) as session:
        session.add(
            AcmeAccount(
                directory_url=url,
                key_sealed=node.keybox.seal(key_pem),
                registration=net.account.json_dumps() if net.account else "{}",
                created_at=clock.now(),
            )
        )
    return acme, key
