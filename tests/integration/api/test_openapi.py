"""The OpenAPI document (`/openapi.json`) and its page (`/docs`): a valid OpenAPI 3.1 document,
every action's answer and error body described, real answers matching, the bearer scheme,
and Swagger UI served with its own assets only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from certwatch.api import ACTIONS
from certwatch.api.http import status_of
from certwatch.api.responses import RESPONSES
from certwatch.app.service import Service
from tests.certfactory import make_pki
from tests.conftest import make_config
from tests.integration.servers import api_server
from tests.support import free_port

TOKEN = "openapi-test-token"


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    """An HTTP client of a service without api.token, served by a real uvicorn."""
    with api_server(service) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[httpx.Client]:
    """An HTTP client of a service with api.token set (no token sent by default)."""
    svc = Service(make_config(tmp_path, api={"token": TOKEN}))
    with api_server(svc) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client
    svc.close()


def _document(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _check(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate `instance` against `schema`, whose `$ref`s point into `document`."""
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


def test_the_document_is_valid_openapi(http: httpx.Client, guarded: httpx.Client) -> None:
    """openapi-spec-validator accepts the document, with and without api.token."""
    for client in (http, guarded):
        document = _document(client)
        assert document["openapi"].startswith("3.1")
        validate(document)


def test_every_action_documents_its_answer_and_its_errors(http: httpx.Client) -> None:
    """Each action's 200 answer has a typed schema with RequestId (a changing action's also
    allows the DryRun answer), and every 4xx/5xx answer is the {RequestId, Code, Message}
    error body whose Code is one of the codes the action declares for that status."""
    document = _document(http)
    schemas = document["components"]["schemas"]
    error = schemas["ErrorResponse"]
    assert set(error["required"]) == {"RequestId", "Code", "Message"}
    assert {error["properties"][f]["type"] for f in ("RequestId", "Code", "Message")} == {"string"}
    for name, action in ACTIONS.items():
        responses = document["paths"][f"/v1/{name}"]["post"]["responses"]
        documented: set[str] = set()
        for status in set(responses) - {"200"}:
            body = responses[status]["content"]["application/json"]["schema"]
            assert body["allOf"][0] == {"$ref": "#/components/schemas/ErrorResponse"}, name
            listed = body["allOf"][1]["properties"]["Code"]["enum"]
            assert {str(status_of(code)) for code in listed} == {status}, (name, status)
            assert all(code in responses[status]["description"] for code in listed)
            documented.update(listed)
        assert documented == set(action.codes), name
        assert {"400", "401", "500", "503"} <= set(responses), name
        answer = responses["200"]["content"]["application/json"]["schema"]
        refs = [answer] if not action.changing else answer["anyOf"]
        if action.changing:
            assert refs[1] == {"$ref": "#/components/schemas/DryRunResponse"}, name
        model = schemas[refs[0]["$ref"].rpartition("/")[2]]
        assert "RequestId" in model["required"], name
        for field, prop in model["properties"].items():
            assert {"type", "$ref", "anyOf", "enum", "const"} & set(prop), (name, field, prop)
            assert field in model["required"] or "default" in prop, (name, field)
    get = document["paths"]["/v1/GetCertificate"]["post"]["responses"]
    assert get["404"]["content"]["application/json"]["schema"]["allOf"][1] == {
        "properties": {"Code": {"enum": ["CertificateNotFound"]}}
    }
    delete = document["paths"]["/v1/DeleteCertificate"]["post"]["responses"]
    assert {"ResourceInUse", "ConcurrentModification"} <= set(
        delete["400"]["content"]["application/json"]["schema"]["allOf"][1]["properties"]["Code"][
            "enum"
        ]
        + delete["409"]["content"]["application/json"]["schema"]["allOf"][1]["properties"]["Code"][
            "enum"
        ]
    )
    wrong = {"RequestId": "r", "Certificates": [], "NextToken": None, "TotalCount": "3"}
    with pytest.raises(jsonschema.ValidationError):
        _check(document, {"$ref": "#/components/schemas/ListCertificatesResponse"}, wrong)


def test_answers_with_fields_name_their_fields(http: httpx.Client) -> None:
    """The actions the SPEC gives return values for describe exactly those fields."""
    schemas = _document(http)["components"]["schemas"]
    expected = {
        "UploadCertificate": {"CertificateId"},
        "ListCertificates": {"Certificates", "NextToken", "TotalCount"},
        "StageCertificate": {"StagedCertificateId", "Status", "Reason"},
        "RotateListenerCertificate": {"RotationEventId", "Result", "Reason"},
        "ScanNow": {"ScanId", "Certificates", "ProbesRun", "ProbesFailed", "AlertsSent",
                    "AlertsFailed", "RevocationsChecked", "RevocationWarnings"},
        "ListAlerts": {"Alerts"},
        "TestNotification": {"Results"},
    }
    for name, fields in expected.items():
        model = schemas[RESPONSES[name].__name__]
        assert set(model["properties"]) == {"RequestId", *fields}, name
    certificate = schemas["CertificateObject"]["properties"]
    assert certificate["DaysRemaining"]["type"] == "integer"
    assert certificate["Status"]["enum"] == ["Valid", "Expiring", "Expired", "NotYetValid",
                                              "Revoked"]


def test_the_bearer_scheme_is_declared_and_applied(
    http: httpx.Client, guarded: httpx.Client
) -> None:
    """components.securitySchemes has the http bearer scheme; with api.token set every /v1
    operation requires it, without it the token is optional; /healthz needs none."""
    for client, required in ((guarded, [{"bearer": []}]), (http, [{"bearer": []}, {}])):
        document = _document(client)
        scheme = document["components"]["securitySchemes"]["bearer"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        for path, item in document["paths"].items():
            expected = required if path.startswith("/v1/") else None
            assert item[next(iter(item))].get("security") == expected, path
    refused = guarded.post("/v1/ListListeners", json={})
    assert refused.status_code == 401
    _check(_document(guarded), {"$ref": "#/components/schemas/ErrorResponse"}, refused.json())


class Caller:
    """Calls actions over HTTP and checks every answer against the document's schema."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.document = _document(client)
        self.checked: set[str] = set()

    def __call__(self, action: str, expect: int = 200, **params: Any) -> dict[str, Any]:
        """Call `action`, require HTTP `expect`, validate the answer against its schema."""
        response = self.client.post(f"/v1/{action}", json=params)
        assert response.status_code == expect, response.text
        operation = self.document["paths"][f"/v1/{action}"]["post"]
        schema = operation["responses"][str(expect)]["content"]["application/json"]["schema"]
        body: dict[str, Any] = response.json()
        _check(self.document, schema, body)
        if expect == 200:
            self.checked.add(action)
        return body


def test_real_answers_match_their_schemas(http: httpx.Client) -> None:
    """Answers of most actions (successes, a DryRun, refusals) validate against the
    document's schemas."""
    call = Caller(http)
    pki = make_pki()
    leaf = pki.leaf("a.example")
    cert = call("UploadCertificate", **leaf.upload_params("a"))["CertificateId"]
    extra = call("UploadCertificate", **pki.leaf("b.example").upload_params("b"))["CertificateId"]
    call("UploadCertificate", **pki.root.upload_params("root", "Ca"))
    call("UploadCertificate", expect=400, **leaf.upload_params("a", "Ca"))
    call("GetCertificate", CertificateId=cert)
    call("GetCertificate", expect=404, CertificateId="cert-nothing")
    call("ListCertificates", MaxResults=1)
    lb = call("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
    call("CreateLoadBalancer", LoadBalancerName="dry", DryRun=True)
    sg = call(
        "CreateServerGroup", ServerGroupName="g",
        Servers=[{"ServerIp": "127.0.0.1", "Port": 9, "Weight": 100}],
    )["ServerGroupId"]
    call("AddServersToServerGroup", ServerGroupId=sg,
         Servers=[{"ServerIp": "127.0.0.1", "Port": 10, "Weight": 50}])
    lid = call(
        "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=free_port(),
        CertificateIds=[cert],
    )["ListenerId"]
    call("AssociateAdditionalCertificatesWithListener", ListenerId=lid,
         AdditionalCertificateIds=[extra])
    call("UpdateListenerAttribute", ListenerId=lid, ListenerDescription="documented")
    call("GetListenerAttribute", ListenerId=lid)
    call("ListListeners")
    call("ListListenerCertificates", ListenerId=lid)
    call("ListLoadBalancers")
    call("ListServerGroups")
    call("ListSecurityPolicies")
    call("CreateSecurityPolicy", SecurityPolicyName="p", TlsVersions=["TLSv1.2"],
         Ciphers=["ECDHE-ECDSA-AES128-GCM-SHA256"])
    renewal = pki.leaf("a.example", days=120)
    call("StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem,
         ListenerId=lid)
    call("ListStagedCertificates")
    call("RotateListenerCertificate", ListenerId=lid, DryRun=True)
    call("RotateListenerCertificate", ListenerId=lid)
    call("ListRotationEvents", ListenerId=lid)
    call("ScanNow")
    call("ListAlerts")
    call("TestNotification")
    call("ListCertificateRequests")
    call("StopListener", ListenerId=lid)
    call("StartListener", ListenerId=lid)
    call("DeleteListener", ListenerId=lid, DryRun=True)
    call("DeleteServerGroup", expect=400, ServerGroupId=sg)
    missing = set(RESPONSES) - call.checked
    assert missing <= {
        "RequestCertificate", "RenewCertificate", "GetCertificateRequest",
        "RollbackListenerCertificate",
    }, missing


def test_docs_serves_swagger_ui_from_certwatch_only(http: httpx.Client) -> None:
    """/docs is Swagger UI whose scripts, styles and icon are same-origin paths that load
    (JavaScript, CSS, PNG), under a CSP that allows only them and the page's inline start-up."""
    page = http.get("/docs")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3, assets
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        parts = urlsplit(asset)
        assert not parts.scheme and not parts.netloc, asset
        assert asset.startswith("/docs/static/"), asset
        loaded = http.get(asset)
        assert loaded.status_code == 200, asset
        assert kinds[Path(asset).suffix] in loaded.headers["content-type"], asset
        assert len(loaded.content) > 500, asset
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    script_src = re.search(r"script-src ([^;]+)", csp)
    assert script_src is not None
    sources = script_src.group(1).split()
    assert sources[0] == "'self'"
    assert len(sources) == 2 and sources[1].startswith("'sha256-"), sources
    assert "connect-src 'self'" in csp
    assert "http" not in csp
