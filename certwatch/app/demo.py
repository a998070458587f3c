"""`certwatch serve --demo`: a demo PKI, an echo backend and a listener on 127.0.0.1:8443.

One additional certificate expires in five days, so the first scan raises a demo alert.
The demo keeps its issuing CA (certificate and key, 0600) in `DATA_DIR/demo/issuer.pem`,
so `certwatch demo renew` can issue a renewal of the demo certificate to stage and rotate.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlmodel import select

from certwatch.app.service import Service
from certwatch.config import ConfigError
from certwatch.pki.devpki import Issued, PrivateKey, make_pki
from certwatch.pki.pem import split_pem
from certwatch.private_files import write_private
from certwatch.store.db import transaction
from certwatch.store.models import Listener, ServerGroup
from offload.echo import EchoServer

log = logging.getLogger(__name__)
DEMO_PORT = 8443
DEMO_DESCRIPTION = "certwatch demo listener"
DEMO_NAMES = ("demo.localhost", "localhost", "127.0.0.1")
ISSUER_FILE = "issuer.pem"
RENEWED_DAYS = 120


def install(service: Service, port: int = DEMO_PORT) -> EchoServer:
    """Start the echo backend and make sure the demo listener exists and points at it."""
    echo = EchoServer()
    echo_port = echo.start()
    backend = [{"ServerIp": "127.0.0.1", "Port": echo_port, "Weight": 100}]
    with transaction(service.engine) as session:
        existing = session.exec(
            select(Listener).where(Listener.description == DEMO_DESCRIPTION)
        ).first()
    if existing is not None:
        group_id = existing.server_group_id
        with transaction(service.engine) as session:
            stale = session.get(ServerGroup, group_id)
            old = stale.servers if stale else []
        if old:
            service.call(
                "RemoveServersFromServerGroup",
                {"ServerGroupId": group_id, "Servers": old},
                actor="demo",
            )
        service.call(
            "AddServersToServerGroup", {"ServerGroupId": group_id, "Servers": backend}, actor="demo"
        )
        log.info(
            "demo listener %s now forwards to the echo backend on port %d",
            existing.id,
            echo_port,
            extra={"listener_id": existing.id},
        )
        return echo
    demo_dir = Path(service.config.data_dir) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    pki = make_pki("certwatch demo")
    (demo_dir / "ca.pem").write_text(pki.root_pem)
    write_private(
        demo_dir / ISSUER_FILE, (pki.intermediate.chain_pem + pki.intermediate.key_pem).encode()
    )
    main = pki.leaf(*DEMO_NAMES, days=90)
    soon = pki.leaf("expiring.demo.localhost", days=5)
    service.call("UploadCertificate", pki.root.upload_params("demo-root", "Ca"), actor="demo")
    ids = [
        service.call("UploadCertificate", leaf.upload_params(name), actor="demo")["CertificateId"]
        for name, leaf in (("demo-main", main), ("demo-expiring", soon))
    ]
    lb = service.call("CreateLoadBalancer", {"LoadBalancerName": "demo"}, actor="demo")
    group = service.call(
        "CreateServerGroup", {"ServerGroupName": "demo-echo", "Servers": backend}, actor="demo"
    )
    listener = service.call(
        "CreateListener",
        {
            "LoadBalancerId": lb["LoadBalancerId"],
            "ListenerPort": port,
            "ServerGroupId": group["ServerGroupId"],
            "CertificateIds": [ids[0]],
            "ListenerDescription": DEMO_DESCRIPTION,
        },
        actor="demo",
    )
    service.call(
        "AssociateAdditionalCertificatesWithListener",
        {
            "ListenerId": listener["ListenerId"],
            "AdditionalCertificateIds": [ids[1]],
        },
        actor="demo",
    )
    log.info(
        "demo listener %s on 127.0.0.1:%d (root CA in %s)",
        listener["ListenerId"],
        port,
        demo_dir / "ca.pem",
        extra={"listener_id": listener["ListenerId"], "certificate_id": ids[0]},
    )
    return echo


def next_steps(api: str, port: int = DEMO_PORT, data_dir: str = "data") -> str:
    """What to try against the demo, printed at start."""
    ca = Path(data_dir) / "demo" / "ca.pem"
    return f"""
certwatch demo is running. Try:
  openssl s_client -connect 127.0.0.1:{port} -servername demo.localhost -CAfile {ca} </dev/null
  openssl s_client -connect 127.0.0.1:{port} -servername expiring.demo.localhost \\
      -CAfile {ca} </dev/null
  curl -s -X POST {api}/v1/ListListeners | python3 -m json.tool
  curl -s -X POST {api}/v1/ListCertificates -d '{{"ExpiringWithinDays": 30}}'
  curl -s {api}/metrics | grep certwatch_
"""


def renewal(data_dir: str) -> Issued:
    """A new demo certificate (the same names, valid longer) from the demo's own issuing CA."""
    path = Path(data_dir) / "demo" / ISSUER_FILE
    try:
        chain, key_pem = split_pem(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"{path}: {exc.strerror}: start the demo first (certwatch serve --demo); a demo "
            "folder made by an older certwatch has no issuer: remove it and start again"
        ) from exc
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, PrivateKey):
        raise ConfigError(f"{path}: holds no usable issuing key")
    issuer = Issued(cert=x509.load_pem_x509_certificates(chain.encode())[0], key=key)
    return issuer.issue(*DEMO_NAMES, days=RENEWED_DAYS)
