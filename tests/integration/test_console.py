"""The console over the ASGI app: pages, one code path to the actions, sessions, CSRF."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from certwatch.console import mount
from tests.certfactory import Pki, make_pki
from tests.conftest import Api, make_config
from tests.support import free_port

TOKEN = "console-test-token"


def _client(service: Service) -> TestClient:
    app = create_app(service)
    mount(app, service)
    return TestClient(app)


@pytest.fixture
def console(service: Service) -> Iterator[TestClient]:
    """A console client of a service with no api.token."""
    with _client(service) as client:
        yield client


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[TestClient]:
    """A console client of a service with api.token set."""
    svc = Service(make_config(tmp_path, api={"token": TOKEN}))
    with _client(svc) as client:
        yield client
    svc.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, html
    return found.group(1)


def _listener(api: Api, pki: Pki | None = None) -> tuple[str, str, str]:
    """A TCPSSL listener with a default certificate; (listener id, its cert id, another id)."""
    pki = pki or make_pki()
    first = api.ok("UploadCertificate", **pki.leaf("a.example").upload_params("a"))
    second = api.ok("UploadCertificate", **pki.leaf("b.example").upload_params("b"))
    lb = api.ok("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
    sg = api.ok(
        "CreateServerGroup",
        ServerGroupName="g",
        Servers=[{"ServerIp": "127.0.0.1", "Port": 9, "Weight": 100}],
    )["ServerGroupId"]
    lid = api.ok(
        "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=free_port(),
        CertificateIds=[first["CertificateId"]],
    )["ListenerId"]
    return lid, first["CertificateId"], second["CertificateId"]


def test_root_redirects_to_the_console(console: TestClient) -> None:
    """GET / answers a redirect to /console/."""
    response = console.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/console/"


def test_pages_carry_a_strict_csp_and_a_strict_session_cookie(console: TestClient) -> None:
    """A page allows only its own assets (no script) and sets an HttpOnly, SameSite=Strict
    session cookie; its stylesheet is served by certwatch."""
    response = console.get("/console/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp and "script" not in csp
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert 'href="/console/static/console.css"' in response.text
    assert console.get("/console/static/console.css").status_code == 200


def test_a_change_made_in_the_console_is_the_actions_with_actor_console(
    console: TestClient, api: Api
) -> None:
    """Changing the default through the console's form runs UpdateListenerAttribute: the
    listener's default changes and the history entry's actor is `console`."""
    lid, _, other = _listener(api)
    page = console.get(f"/console/listeners/{lid}?tab=server&dialog=default")
    assert "<dialog open" in page.text
    response = console.post(
        f"/console/listeners/{lid}/default",
        data={"csrf_token": _csrf(page.text), "CertificateId": other},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert api.ok("GetListenerAttribute", ListenerId=lid)["CertificateIds"] == [other]
    events = api.ok("ListRotationEvents", ListenerId=lid)["RotationEvents"]
    assert events[0]["Actor"] == "console"


def test_a_forged_form_without_the_csrf_token_is_refused(console: TestClient, api: Api) -> None:
    """A POST with the session cookie but no CSRF token answers 403 and changes nothing."""
    lid, default, other = _listener(api)
    console.get("/console/")
    response = console.post(f"/console/listeners/{lid}/default", data={"CertificateId": other})
    assert response.status_code == 403
    assert "InvalidCsrfToken" in response.text
    assert api.ok("GetListenerAttribute", ListenerId=lid)["CertificateIds"] == [default]


def test_a_refused_upload_shows_code_and_message_and_never_the_key(
    console: TestClient, api: Api
) -> None:
    """Uploading a certificate with another's key shows KeyCertificateMismatch beside the
    form, stores nothing, and does not render the key back."""
    pki = make_pki()
    leaf, stranger = pki.leaf("c.example"), pki.leaf("d.example")
    csrf = _csrf(console.get("/console/certificates?dialog=upload").text)
    response = console.post(
        "/console/certificates",
        data={
            "csrf_token": csrf, "name": "wrong", "type": "Server",
            "certificate": leaf.chain_pem, "private_key": stranger.key_pem,
        },
    )
    assert response.status_code == 400
    assert "KeyCertificateMismatch" in response.text
    assert "PRIVATE KEY" not in response.text
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_certificates_are_listed_soonest_expiry_first_with_where_used(
    console: TestClient, api: Api
) -> None:
    """The Certificates page lists the sooner-expiring certificate first and names the
    listener that uses each."""
    pki = make_pki()
    later = api.ok("UploadCertificate", **pki.leaf("late.example", days=200).upload_params("late"))
    api.ok("UploadCertificate", **pki.leaf("soon.example", days=20).upload_params("soon"))
    text = console.get("/console/certificates").text
    assert text.index("soon.example") < text.index("late.example")
    assert "not used" in text
    filtered = console.get("/console/certificates?expiring=30").text
    assert "soon.example" in filtered and "late.example" not in filtered
    assert later["CertificateId"] in console.get(
        f"/console/certificates/{later['CertificateId']}"
    ).text


def test_with_a_token_the_console_asks_to_log_in(guarded: TestClient) -> None:
    """With api.token set, a page redirects to the login form; a wrong token is refused and
    the right one gives a session that opens the pages."""
    response = guarded.get("/console/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/console/login")
    assert "set-cookie" not in response.headers
    refused = guarded.post("/console/login", data={"token": "wrong"})
    assert refused.status_code == 401 and "Unauthorized" in refused.text
    assert guarded.post("/console/login", data={"token": TOKEN}).status_code == 200
    assert guarded.get("/console/alerts").status_code == 200


def test_a_forged_session_cookie_opens_nothing(guarded: TestClient) -> None:
    """A session cookie the console did not sign is no session."""
    guarded.cookies.set("certwatch_console", "00ff.deadbeef")
    response = guarded.get("/console/", follow_redirects=False)
    assert response.status_code == 303


def test_over_tls_the_session_cookie_is_secure(console: TestClient) -> None:
    """A page fetched over HTTPS sets the session cookie with Secure."""
    response = console.get("https://testserver/console/")
    assert "secure" in response.headers["set-cookie"].lower()


def test_rotate_now_is_offered_only_with_a_staged_candidate(
    console: TestClient, api: Api
) -> None:
    """The Manage certificates page offers `Rotate Now` once a renewal is staged for the
    listener, and not before."""
    pki = make_pki()
    lid, _, _ = _listener(api, pki)
    assert ">Rotate Now<" not in console.get(f"/console/listeners/{lid}").text
    api.ok("UploadCertificate", **pki.root.upload_params("root", "Ca"))
    renewal = pki.leaf("a.example", days=120)
    staged = api.ok(
        "StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem,
        ListenerId=lid,
    )
    assert staged["Status"] == "Pending", staged
    assert ">Rotate Now<" in console.get(f"/console/listeners/{lid}").text
