"""The console over the ASGI app: pages, one code path to the actions, sessions, CSRF."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certwatch.api.http import create_app
from certwatch.app.service import Service
from certwatch.config import RotationConfig
from certwatch.console import mount
from certwatch.console.lifecycle import domain_names, rotates
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


@pytest.fixture
def with_acme(tmp_path: Path) -> Iterator[TestClient]:
    """A console client of a service whose [acme] names a server (tls-alpn-01); nothing runs
    the orders here, so a placed request stays Pending."""
    acme = {"directory_url": f"https://127.0.0.1:{free_port()}/dir", "email": "ops@example.com"}
    svc = Service(make_config(tmp_path, acme=acme))
    with _client(svc) as client:
        yield client
    svc.close()


def test_a_certificate_staged_through_the_form_is_listed_with_its_listener(
    console: TestClient, api: Api
) -> None:
    """Staging a renewal through the Stage Certificate form runs StageCertificate: it is
    listed Pending for its listener, with when it rotates, and the key is not shown."""
    pki = make_pki()
    lid, _, _ = _listener(api, pki)
    api.ok("UploadCertificate", **pki.root.upload_params("root", "Ca"))
    renewal = pki.leaf("a.example", days=120)
    page = console.get("/console/staged")
    assert f'<option value="{lid}">' in page.text
    response = console.post(
        "/console/staged",
        data={
            "csrf_token": _csrf(page.text), "certificate": renewal.chain_pem,
            "private_key": renewal.key_pem, "listener": lid,
        },
    )
    assert response.status_code == 200, response.text
    assert "The certificate was staged" in response.text
    [staged] = api.ok("ListStagedCertificates")["StagedCertificates"]
    assert (staged["Status"], staged["ListenerId"]) == ("Pending", lid)
    assert staged["StagedCertificateId"] in response.text
    assert "status-Pending" in response.text and ">Pending<" in response.text
    assert "or on Rotate Now" in response.text
    assert "PRIVATE KEY" not in response.text


def test_a_staged_certificate_that_fails_the_rules_is_listed_rejected_with_its_reason(
    console: TestClient, api: Api
) -> None:
    """A staged certificate that does not chain to a trusted root is kept as Rejected and the
    page shows the status word and the reason; newest entries come first."""
    pki = make_pki()
    _listener(api, pki)
    first, second = pki.leaf("a.example", days=100), pki.leaf("a.example", days=120)
    for renewal in (first, second):
        staged = api.ok(
            "StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem
        )
        assert staged["Status"] == "Rejected"
    text = console.get("/console/staged").text
    rows = api.ok("ListStagedCertificates")["StagedCertificates"]
    assert text.index(rows[1]["StagedCertificateId"]) < text.index(rows[0]["StagedCertificateId"])
    assert ">Rejected<" in text and str(rows[0]["Reason"]) in text
    assert "Never (not a candidate)" in text and ">any<" in text


def test_staging_a_bad_pem_shows_invalid_certificate_and_stages_nothing(
    console: TestClient, api: Api
) -> None:
    """A Stage Certificate form with a certificate that is not PEM shows InvalidCertificate
    beside the form, keeps the typed certificate, never renders the key back, stages
    nothing."""
    key = make_pki().leaf("e.example").key_pem
    csrf = _csrf(console.get("/console/staged").text)
    response = console.post(
        "/console/staged",
        data={"csrf_token": csrf, "certificate": "not a pem", "private_key": key, "listener": ""},
    )
    assert response.status_code == 400
    assert "InvalidCertificate" in response.text and 'role="alert"' in response.text
    assert "not a pem</textarea>" in response.text
    assert "PRIVATE KEY" not in response.text
    assert api.ok("ListStagedCertificates")["StagedCertificates"] == []
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_the_staged_and_requests_forms_refuse_a_missing_csrf_token(
    console: TestClient, api: Api
) -> None:
    """Stage, Request and Renew posted without the session's CSRF token answer 403 and
    change nothing."""
    leaf = make_pki().leaf("f.example")
    console.get("/console/")
    for path, data in (
        ("/console/staged", {"certificate": leaf.chain_pem, "private_key": leaf.key_pem}),
        ("/console/requests", {"names": "f.example"}),
        ("/console/requests/renew", {"CertificateId": "cert-0000000000000000"}),
    ):
        response = console.post(path, data={**data, "csrf_token": "00"})
        assert response.status_code == 403, path
        assert "InvalidCsrfToken" in response.text
    assert api.ok("ListStagedCertificates")["StagedCertificates"] == []
    assert api.ok("ListCertificates")["TotalCount"] == 0


def test_without_acme_the_requests_page_says_so_and_a_request_is_refused(
    console: TestClient, api: Api
) -> None:
    """With no [acme], the Requests page says ACME is not configured and a request from its
    form shows the action's own AcmeNotConfigured; nothing is kept."""
    page = console.get("/console/requests")
    assert page.status_code == 200
    assert "ACME is not configured" in page.text
    response = console.post(
        "/console/requests", data={"csrf_token": _csrf(page.text), "names": "a.example"}
    )
    assert response.status_code == 400
    assert "AcmeNotConfigured" in response.text and "a.example</textarea>" in response.text
    assert api.ok("ListCertificateRequests")["CertificateRequests"] == []


def test_a_request_from_the_form_is_listed_pending_with_every_name(
    with_acme: TestClient,
) -> None:
    """Domain names typed one per line and comma separated become one RequestCertificate,
    listed Pending (colour class and word) with all its names."""
    page = with_acme.get("/console/requests")
    assert "ACME is not configured" not in page.text
    response = with_acme.post(
        "/console/requests",
        data={
            "csrf_token": _csrf(page.text), "names": "a.example\nb.example, c.example",
            "listener": "", "role": "default",
        },
    )
    assert response.status_code == 200, response.text
    assert "The certificate request was placed" in response.text
    assert re.search(r"<code>crq-[0-9a-f]{16}</code>", response.text)
    assert "a.example, b.example, c.example" in response.text
    assert 'class="status status-Pending">Pending<' in response.text


def test_a_wildcard_request_without_dns01_shows_unsupported_challenge(
    with_acme: TestClient,
) -> None:
    """A wildcard name with tls-alpn-01 configured is refused by RequestCertificate with
    UnsupportedChallenge, shown beside the form; no request is kept."""
    csrf = _csrf(with_acme.get("/console/requests").text)
    response = with_acme.post(
        "/console/requests", data={"csrf_token": csrf, "names": "*.example.com"}
    )
    assert response.status_code == 400
    assert "UnsupportedChallenge" in response.text and "dns-01" in response.text
    assert "No certificate requests." in response.text


def test_renew_of_a_certificate_not_issued_through_acme_is_refused(
    with_acme: TestClient,
) -> None:
    """Renew posted for an uploaded (not managed) certificate shows RenewCertificate's
    refusal on the Requests page and places no request."""
    leaf = make_pki().leaf("g.example")
    created = with_acme.post("/v1/UploadCertificate", json=leaf.upload_params("g")).json()
    page = with_acme.get("/console/requests")
    assert "No certificate is managed through ACME yet." in page.text
    response = with_acme.post(
        "/console/requests/renew",
        data={"csrf_token": _csrf(page.text), "CertificateId": created["CertificateId"]},
    )
    assert response.status_code == 400
    assert "InvalidParameter" in response.text and "not managed" in response.text
    assert "No certificate requests." in response.text


def test_the_requests_page_pages_with_a_next_link(with_acme: TestClient) -> None:
    """With more requests than one page holds, the page lists 50 (newest first) and a Next
    link whose page holds the rest."""
    placed = [
        with_acme.post(
            "/v1/RequestCertificate", json={"DomainNames": [f"n{i}.example"]}
        ).json()["CertificateRequestId"]
        for i in range(51)
    ]
    first = with_acme.get("/console/requests").text
    assert "Requests, newest first (51)" in first
    shown = re.findall(r"<code>(crq-[0-9a-f]{16})</code>", first)
    assert len(shown) == 50 and placed[0] not in shown
    link = re.search(r'href="(/console/requests\?next=[^"]+)">Next<', first)
    assert link, first
    rest = with_acme.get(link.group(1).replace("&amp;", "&")).text
    assert re.findall(r"<code>(crq-[0-9a-f]{16})</code>", rest) == [placed[0]]
    assert ">Next<" not in rest
    refused = with_acme.get("/console/requests?next=not-a-token")
    assert refused.status_code == 400 and "InvalidParameter" in refused.text


def test_when_a_staged_certificate_rotates_is_said_in_words() -> None:
    """The Rotates column: the rotation time once applied, never when not a candidate, Rotate
    Now only with auto off, the next scan once the default is within before_days, and the
    date it will be otherwise; the request form's names split on lines and commas."""
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    auto, manual = RotationConfig(before_days=30), RotationConfig(auto=False)
    entry = {"Status": "Pending", "ListenerId": "lsn-1", "UpdatedAt": "2026-11-30T00:00:00Z"}
    soon, late = {"lsn-1": "2026-12-20T00:00:00Z"}, {"lsn-1": "2027-03-01T00:00:00Z"}
    assert rotates({**entry, "Status": "Applied"}, late, auto, now).startswith(
        "Rotated at 2026-11-30T00:00:00Z"
    )
    assert rotates({**entry, "Status": "Rejected"}, late, auto, now).startswith("Never")
    assert rotates(entry, late, manual, now).startswith("On Rotate Now")
    assert rotates(entry, soon, auto, now).startswith("At the next scan")
    assert rotates(entry, late, auto, now).startswith("From 2027-01-30T00:00:00Z")
    assert rotates({**entry, "ListenerId": None}, late, auto, now).startswith(
        "When a default it covers has 30 days left"
    )
    assert domain_names(" a.example\r\nb.example,c.example , ,") == [
        "a.example", "b.example", "c.example"
    ]
