"""UploadCertificate with CertificateFormat PKCS12 and DER, through the API and the CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certwatch.app.cli import main
from certwatch.app.service import Service
from offload.echo import EchoServer
from tests.certfactory import Issued, make_pki
from tests.conftest import Api, make_config
from tests.integration.rotation_helpers import served_fingerprint
from tests.integration.servers import ServeProcess, api_server, echo_when_served
from tests.support import free_port

PASSWORD = "correct horse"


def _pfx(leaf: Issued | None, extra: list[x509.Certificate], password: str | None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"site",
        leaf.key if leaf else None,
        leaf.cert if leaf else None,
        extra,
        encryption,  # type: ignore[arg-type]
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_pkcs12_upload_is_described_like_pem(api: Api) -> None:
    """A password-protected PFX (root, intermediate, leaf, key) is stored as the leaf with its
    chain; GetCertificate describes it and shows neither key nor password."""
    pki = make_pki()
    leaf = pki.leaf("www.example.com", days=200)
    blob = _pfx(leaf, [pki.root.cert, pki.intermediate.cert], PASSWORD)
    cid = api.ok(
        "UploadCertificate",
        CertificateName="from-pfx",
        CertificateType="Server",
        Certificate=_b64(blob),
        CertificateFormat="PKCS12",
        Password=PASSWORD,
    )["CertificateId"]
    cert = api.ok("GetCertificate", CertificateId=cid)["Certificate"]
    assert (cert["CommonName"], cert["Fingerprint"]) == ("www.example.com", leaf.fingerprint)
    assert cert["ChainLength"] == 3
    shown = json.dumps(cert)
    assert "PRIVATE KEY" not in shown and PASSWORD not in shown


@pytest.mark.parametrize(
    ("make", "password", "code"),
    [
        (lambda pki, leaf: _pfx(leaf, [], PASSWORD), "wrong", "InvalidPassword"),
        (lambda pki, leaf: _pfx(leaf, [], PASSWORD), None, "InvalidPassword"),
        (
            lambda pki, leaf: _pfx(None, [pki.intermediate.cert, leaf.cert], None),
            None,
            "MissingPrivateKey",
        ),
        (
            lambda pki, leaf: _pfx(leaf, [pki.leaf("other.example.com").cert], None),
            None,
            "MultipleLeafCertificates",
        ),
        (lambda pki, leaf: b"\x30\x03\x02\x01\x01", None, "InvalidCertificate"),
    ],
    ids=["wrong-password", "no-password", "no-key", "two-leaves", "not-a-pfx"],
)
def test_pkcs12_refusals_change_nothing(
    api: Api, make: object, password: str | None, code: str
) -> None:
    """A wrong or missing password, a PFX without a key, one with two leaves and bytes that are
    no PFX each get their Code, a message without the password, and store nothing."""
    pki = make_pki()
    leaf = pki.leaf("www.example.com")
    blob = make(pki, leaf)  # type: ignore[operator]
    message = api.fails(
        "UploadCertificate",
        code,
        CertificateName="x",
        CertificateType="Server",
        Certificate=_b64(blob),
        CertificateFormat="PKCS12",
        Password=password,
    )
    assert PASSWORD not in message and "wrong" not in message
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_keyless_pkcs12_is_a_ca_upload(api: Api) -> None:
    """A PFX holding only the root is accepted as a Ca certificate."""
    pki = make_pki()
    cid = api.ok(
        "UploadCertificate",
        CertificateName="root",
        CertificateType="Ca",
        Certificate=_b64(_pfx(None, [pki.root.cert], None)),
        CertificateFormat="PKCS12",
    )["CertificateId"]
    assert api.ok("GetCertificate", CertificateId=cid)["Certificate"]["CertificateType"] == "Ca"


def test_der_leaf_with_a_key_that_is_not_its_own_is_refused(api: Api) -> None:
    """A DER leaf is stored with its PEM key; with another certificate's key it is
    KeyCertificateMismatch, as for PEM."""
    pki = make_pki()
    leaf, other = pki.leaf("a.example.com"), pki.leaf("b.example.com")
    der = _b64(leaf.cert.public_bytes(serialization.Encoding.DER))
    params = {
        "CertificateName": "der",
        "CertificateType": "Server",
        "Certificate": der,
        "CertificateFormat": "DER",
    }
    api.fails("UploadCertificate", "KeyCertificateMismatch", **params, PrivateKey=other.key_pem)
    assert api.ok("ListCertificates")["TotalCount"] == 0
    cid = api.ok("UploadCertificate", **params, PrivateKey=leaf.key_pem)["CertificateId"]
    cert = api.ok("GetCertificate", CertificateId=cid)["Certificate"]
    assert (cert["Fingerprint"], cert["ChainLength"]) == (leaf.fingerprint, 1)


def test_password_with_pem_is_refused(api: Api) -> None:
    """A Password with CertificateFormat PEM is InvalidParameter."""
    leaf = make_pki().leaf("a.example.com")
    api.fails("UploadCertificate", "InvalidParameter", **leaf.upload_params("x"), Password="pw")


def test_cli_uploads_a_pfx_that_a_listener_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certwatch certs upload --cert site.pfx --password-file` against a real serve stores the
    leaf, chain and key, and a listener on it serves the leaf with its chain to a verifying
    TLS client; a wrong password exits 1 with InvalidPassword and never prints it."""
    pki = make_pki()
    leaf = pki.leaf("pfx.example.com", days=200)
    (tmp_path / "site.pfx").write_bytes(_pfx(leaf, [pki.intermediate.cert], PASSWORD))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "bad").write_text("not it\n")
    serve = ServeProcess(tmp_path).start()
    try:
        base = ["--api", serve.url, "certs", "upload", "site", "--cert", str(tmp_path / "site.pfx")]
        assert main([*base, "--password-file", str(tmp_path / "bad"), "--json"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("InvalidPassword:") and "not it" not in err
        assert main([*base, "--password-file", str(tmp_path / "pw"), "--json"]) == 0
        cert_id = json.loads(capsys.readouterr().out)["CertificateId"]
        with EchoServer() as echo:

            def call(action: str, **params: object) -> dict[str, object]:
                answer = httpx.post(f"{serve.url}/v1/{action}", json=params, timeout=30)
                assert answer.status_code == 200, answer.text
                return dict(answer.json())

            lb = call("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
            group = call(
                "CreateServerGroup",
                ServerGroupName="g",
                Servers=[{"ServerIp": "127.0.0.1", "Port": echo.port, "Weight": 1}],
            )["ServerGroupId"]
            port = free_port()
            call(
                "CreateListener",
                LoadBalancerId=lb,
                ServerGroupId=group,
                ListenerPort=port,
                CertificateIds=[cert_id],
            )
            assert echo_when_served(port, pki.root_pem, "pfx.example.com", b"hi") == b"hi"
            assert served_fingerprint(port, "pfx.example.com", pki.root_pem) == leaf.fingerprint
    finally:
        assert serve.stop() == 0
    assert PASSWORD not in serve.output()


def test_cli_reads_der_by_extension_and_refuses_a_password_for_pem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certs upload --cert site.der --key site.key` stores the DER leaf; a `.cer` holding PEM
    is read as PEM; --password with a PEM file is a usage error (exit 2) naming no password."""
    pki = make_pki()
    leaf, other = pki.leaf("der.example.com"), pki.leaf("cer.example.com")
    (tmp_path / "site.der").write_bytes(leaf.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "site.key").write_text(leaf.key_pem)
    (tmp_path / "other.cer").write_text(other.chain_pem)
    (tmp_path / "other.key").write_text(other.key_pem)
    service = Service(make_config(tmp_path / "svc"))
    try:
        with api_server(service) as url:
            for name in ("site.der", "other.cer"):
                key = str(tmp_path / name).rsplit(".", 1)[0] + ".key"
                argv = ["--api", url, "--json", "certs", "upload", name, "--cert"]
                assert main([*argv, str(tmp_path / name), "--key", key]) == 0
                cert_id = json.loads(capsys.readouterr().out)["CertificateId"]
                shown = service.call("GetCertificate", {"CertificateId": cert_id})["Certificate"]
                issued = leaf if name == "site.der" else other
                assert shown["Fingerprint"] == issued.fingerprint
            bad = ["--api", url, "certs", "upload", "x", "--cert", str(tmp_path / "other.cer")]
            assert main([*bad, "--password", "hunter2"]) == 2
            assert "hunter2" not in capsys.readouterr().err
    finally:
        service.close()
