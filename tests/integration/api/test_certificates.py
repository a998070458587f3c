"""Certificate actions through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlmodel import Session, select

from certwatch.app.service import Service
from certwatch.store.models import Certificate
from tests.certfactory import Issued, issue, make_pki
from tests.conftest import Api

NOW = dt.datetime.now(dt.UTC)


def upload(api: Api, leaf: Issued, cert_type: str = "Server", name: str = "c") -> str:
    """Upload an Issued (chain and key for Server) and return its id."""
    return str(api.ok("UploadCertificate", **leaf.upload_params(name, cert_type))["CertificateId"])


def test_upload_and_get_describe_every_field(api: Api) -> None:
    """An uploaded RSA leaf with its intermediate is described field by field, key never shown."""
    pki = make_pki()
    leaf = pki.leaf("www.example.com", "api.example.com", key="rsa2048", days=10)
    cid = upload(api, leaf)
    assert cid.startswith("cert-") and len(cid) == 21
    cert = api.ok("GetCertificate", CertificateId=cid)["Certificate"]
    assert cert["CommonName"] == "www.example.com"
    assert cert["SubjectAlternativeNames"] == ["www.example.com", "api.example.com"]
    assert cert["Issuer"] == "CN=certwatch test intermediate CA"
    assert cert["Fingerprint"] == leaf.fingerprint
    assert cert["SerialNumber"] == format(leaf.cert.serial_number, "x")
    assert (cert["KeyAlgorithm"], cert["KeySize"]) == ("RSA", 2048)
    assert cert["SignatureAlgorithm"] == "ecdsa-with-SHA256"
    assert cert["ChainLength"] == 2
    assert cert["DaysRemaining"] in (9, 10)
    assert cert["Status"] == "Expiring"
    assert cert["NotAfter"].endswith("Z")
    assert "IncompleteChain" in cert["Warnings"]
    assert "PRIVATE KEY" not in json.dumps(cert)


def test_uploaded_ca_completes_later_chains(api: Api) -> None:
    """With the root uploaded as a Ca certificate, a leaf plus intermediate has no warning."""
    pki = make_pki()
    upload(api, pki.root, "Ca", "root")
    cid = upload(api, pki.leaf("a.example.com", days=200))
    cert = api.ok("GetCertificate", CertificateId=cid)["Certificate"]
    assert cert["Warnings"] == []
    assert cert["Status"] == "Valid"


def test_weak_key_is_a_warning(api: Api) -> None:
    """An RSA-1024 certificate is stored with the WeakKey warning."""
    cid = upload(api, issue("weak.example.com", key="rsa1024"))
    assert "WeakKey" in api.ok("GetCertificate", CertificateId=cid)["Certificate"]["Warnings"]


def test_expired_certificate_is_stored_as_expired(api: Api) -> None:
    """An expired certificate may be uploaded for the inventory and shows Status Expired."""
    old = issue(
        "old.example.com",
        not_before=NOW - dt.timedelta(days=100),
        not_after=NOW - dt.timedelta(days=1),
    )
    cert = api.ok("GetCertificate", CertificateId=upload(api, old))["Certificate"]
    assert cert["Status"] == "Expired" and cert["DaysRemaining"] < 0


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda p: {**p, "Certificate": "hello"}, "InvalidCertificate"),
        (lambda p: {**p, "Certificate": ""}, "InvalidParameter"),
        (lambda p: {**p, "PrivateKey": issue("other").key_pem}, "KeyCertificateMismatch"),
        (lambda p: {k: v for k, v in p.items() if k != "PrivateKey"}, "MissingPrivateKey"),
        (
            lambda p: {
                **p,
                "PrivateKey": "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----",
            },
            "InvalidPrivateKey",
        ),
        (lambda p: {**p, "CertificateType": "Banana"}, "InvalidParameter"),
        (lambda p: {**p, "CertificateName": 42}, "InvalidParameter"),
        (lambda p: {**p, "Colour": "blue"}, "InvalidParameter"),
    ],
)
def test_bad_uploads_are_refused_and_change_nothing(api: Api, mutate: object, code: str) -> None:
    """Each bad upload is a 400 with its own Code, and the inventory stays empty."""
    leaf = issue("a.example.com")
    params = {
        "CertificateName": "a",
        "CertificateType": "Server",
        "Certificate": leaf.chain_pem,
        "PrivateKey": leaf.key_pem,
    }
    api.fails("UploadCertificate", code, **mutate(params))  # type: ignore[operator]
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_chain_in_wrong_order_is_invalid_chain(api: Api) -> None:
    """A chain whose links do not sign each other (intermediate first) is InvalidChain."""
    pki = make_pki()
    leaf = pki.leaf("a.example.com")
    wrong = pki.intermediate.cert_pem + leaf.cert_pem + pki.root.cert_pem
    message = api.fails(
        "UploadCertificate",
        "InvalidChain",
        CertificateName="x",
        CertificateType="Server",
        Certificate=wrong,
        PrivateKey=leaf.key_pem,
    )
    assert "signed" in message


def test_der_and_pkcs12_are_explained(api: Api) -> None:
    """DER bytes and a PKCS#12 blob are refused with a message saying what was sent."""
    leaf = issue("a.example.com")
    der = base64.b64encode(leaf.cert.public_bytes(serialization.Encoding.DER)).decode()
    message = api.fails(
        "UploadCertificate",
        "InvalidCertificate",
        CertificateName="x",
        CertificateType="Server",
        Certificate=der,
        PrivateKey=leaf.key_pem,
    )
    assert "DER" in message
    blob = pkcs12.serialize_key_and_certificates(
        b"x",
        leaf.key,
        leaf.cert,
        None,
        serialization.NoEncryption(),  # type: ignore[arg-type]
    )
    message = api.fails(
        "UploadCertificate",
        "InvalidCertificate",
        CertificateName="x",
        CertificateType="Server",
        Certificate=base64.b64encode(blob).decode(),
        PrivateKey=leaf.key_pem,
    )
    assert "PKCS#12" in message


def test_ca_rules(api: Api) -> None:
    """A Ca upload must be a CA and carry no key; a leaf as Ca is NotACaCertificate."""
    pki = make_pki()
    leaf = pki.leaf("a.example.com")
    api.fails(
        "UploadCertificate",
        "NotACaCertificate",
        CertificateName="x",
        CertificateType="Ca",
        Certificate=leaf.cert_pem,
    )
    api.fails(
        "UploadCertificate",
        "InvalidParameter",
        CertificateName="x",
        CertificateType="Ca",
        Certificate=pki.root_pem,
        PrivateKey=pki.root.key_pem,
    )
    upload(api, pki.root, "Ca")


def test_empty_body_unknown_action_and_huge_body(api: Api) -> None:
    """An empty body, a non-object body, an unknown action and a 10 MB body each get a Code."""
    assert "missing parameter" in api.fails("UploadCertificate", "InvalidParameter")
    response = api.client.post("/v1/UploadCertificate", content=b"[1, 2]")
    assert (response.status_code, response.json()["Code"]) == (400, "InvalidJson")
    response = api.client.post("/v1/NoSuchThing", json={})
    assert (response.status_code, response.json()["Code"]) == (404, "InvalidAction")
    response = api.client.post("/v1/UploadCertificate", content=b"x" * (10 * 1024 * 1024))
    assert (response.status_code, response.json()["Code"]) == (413, "RequestTooLarge")


def test_list_filters_and_pages(api: Api) -> None:
    """ListCertificates filters by type and expiry and pages with NextToken over all rows."""
    pki = make_pki()
    ids = {
        upload(api, pki.leaf(f"h{i}.example.com", days=5 + 20 * i), name=f"c{i}") for i in range(5)
    }
    upload(api, pki.root, "Ca")
    assert api.ok("ListCertificates", CertificateType="Ca")["TotalCount"] == 1
    soon = api.ok("ListCertificates", ExpiringWithinDays=30)
    assert soon["TotalCount"] == 2
    seen: list[str] = []
    token = None
    for _ in range(10):
        page = api.ok(
            "ListCertificates",
            CertificateType="Server",
            MaxResults=2,
            **({"NextToken": token} if token else {}),
        )
        assert page["TotalCount"] == 5 and len(page["Certificates"]) <= 2
        seen += [c["CertificateId"] for c in page["Certificates"]]
        token = page["NextToken"]
        if token is None:
            break
    assert sorted(seen) == sorted(ids)
    api.fails("ListCertificates", "InvalidParameter", MaxResults=0)
    api.fails("ListCertificates", "InvalidParameter", NextToken="!!!")


def test_delete_and_not_found(api: Api) -> None:
    """Delete removes a certificate; unknown ids are 404 CertificateNotFound."""
    cid = upload(api, issue("a.example.com"))
    api.ok("DeleteCertificate", CertificateId=cid)
    api.fails("GetCertificate", "CertificateNotFound", 404, CertificateId=cid)
    api.fails("DeleteCertificate", "CertificateNotFound", 404, CertificateId=cid)


def test_dry_run_checks_but_changes_nothing(api: Api) -> None:
    """DryRun answers DryRun=true for a good upload and the real error for a bad one; no change."""
    leaf = issue("a.example.com")
    body = api.ok("UploadCertificate", **leaf.upload_params("a"), DryRun=True)
    assert body["DryRun"] is True and "CertificateId" not in body
    api.fails(
        "UploadCertificate",
        "KeyCertificateMismatch",
        CertificateName="a",
        CertificateType="Server",
        Certificate=leaf.chain_pem,
        PrivateKey=issue("b").key_pem,
        DryRun=True,
    )
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_client_token_is_idempotent(api: Api) -> None:
    """A repeated ClientToken replays the first answer, uploading once; other params clash."""
    leaf = issue("a.example.com")
    params = {
        "CertificateName": "a",
        "CertificateType": "Server",
        "Certificate": leaf.chain_pem,
        "PrivateKey": leaf.key_pem,
        "ClientToken": "tok-1",
    }
    first = api.ok("UploadCertificate", **params)
    second = api.ok("UploadCertificate", **params)
    assert first["CertificateId"] == second["CertificateId"]
    assert api.ok("ListCertificates")["TotalCount"] == 1
    api.fails(
        "UploadCertificate", "IdempotentParameterMismatch", **{**params, "CertificateName": "b"}
    )


def test_private_keys_are_encrypted_at_rest(api: Api, service: Service) -> None:
    """The stored key is not the PEM, the key file is 0600, and the snapshot decrypts it back."""
    leaf = issue("a.example.com")
    cid = upload(api, leaf)
    with Session(service.engine) as session:
        row = session.exec(select(Certificate).where(Certificate.id == cid)).one()
    assert row.key_encrypted is not None and b"PRIVATE KEY" not in row.key_encrypted
    assert service.keybox.open(row.key_encrypted).strip() == leaf.key_pem.strip()
    mode = stat.S_IMODE(os.stat(service.config.key_file).st_mode)
    assert mode == 0o600
