"""The console in a real browser (Debian's chromium through Playwright) against a real
`certwatch serve`: each change made by clicking is seen by a real TLS client."""

from __future__ import annotations

import re
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from offload.echo import EchoServer
from tests.certfactory import Issued, Pki, make_pki
from tests.conftest import require
from tests.integration.offload.conftest import (
    client_context,
    echo_roundtrip,
    leaf_fingerprint,
    tls_connect,
)
from tests.integration.pebble import Pebble, serve_acme
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
TOKEN = "browser-test-token"
AXE = Path(__file__).parent / "assets" / "axe.min.js"
"""axe-core, vendored (tests/integration/assets/README.md): nothing is fetched at test time."""
BLOCKING = ("serious", "critical")

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # without the test extras: the browser fixture skips
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium; skip (fail under CERTWATCH_TEST_REQUIRE_TOOLS=1) without it."""
    require(sync_playwright is not None, "playwright is not installed")
    require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is not installed")
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


class Fleet:
    """A running `certwatch serve`, its API, an echo backend and one listener."""

    def __init__(self, serve: ServeProcess, echo: EchoServer, token: str | None) -> None:
        self.serve = serve
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.pki: Pki = make_pki("console")
        self.port = free_port()
        self.echo = echo

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        """Call an API action and require success."""
        response = httpx.post(
            f"{self.serve.url}/v1/{action}", json=params, headers=self.headers, timeout=30
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def upload(self, issued: Issued, name: str, cert_type: str = "Server") -> str:
        """Upload a certificate through the API; its id."""
        params = issued.upload_params(name, cert_type)
        return str(self.call("UploadCertificate", **params)["CertificateId"])

    def listener(self, default: str) -> str:
        """A TCPSSL listener in front of the echo server with `default`; its id."""
        lb = self.call("CreateLoadBalancer", LoadBalancerName="lb")["LoadBalancerId"]
        sg = self.call(
            "CreateServerGroup",
            ServerGroupName="echo",
            Servers=[{"ServerIp": "127.0.0.1", "Port": self.echo.port, "Weight": 100}],
        )["ServerGroupId"]
        return str(
            self.call(
                "CreateListener", LoadBalancerId=lb, ServerGroupId=sg, ListenerPort=self.port,
                CertificateIds=[default],
            )["ListenerId"]
        )

    def served(self, name: str) -> str:
        """The fingerprint of the leaf the listener serves for SNI `name`."""
        with tls_connect(self.port, client_context(), name) as sock:
            return leaf_fingerprint(sock)

    def echoes(self, cert: Issued | None = None, tmp_dir: str | None = None) -> bool:
        """Whether a client (with `cert`, else none) gets an echo through the listener."""
        try:
            ctx = client_context(cert=cert, tmp_dir=tmp_dir)
            with tls_connect(self.port, ctx, "a.console.test") as sock:
                return echo_roundtrip(sock) == b"ping"
        except (OSError, ssl.SSLError):
            return False


def _fleet(tmp_path: Path, token: str | None) -> Iterator[Fleet]:
    api_toml = f'token = "{token}"\n' if token else ""
    serve = ServeProcess(tmp_path, api_toml=api_toml).start()
    try:
        with EchoServer() as echo:
            yield Fleet(serve, echo, token)
    finally:
        serve.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A real `certwatch serve` without api.token."""
    yield from _fleet(tmp_path, None)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Fleet]:
    """A real `certwatch serve` with api.token set."""
    yield from _fleet(tmp_path, TOKEN)


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_listener_certificates_managed_by_clicking(
    browser: Browser, fleet: Fleet, tmp_path: Path
) -> None:
    """Change the default, add two SNI certificates, delete one, turn mutual authentication
    on and off, roll back: after each click a real TLS client sees the change."""
    a, b = fleet.pki.leaf("a.console.test"), fleet.pki.leaf("b.console.test")
    s1, s2 = fleet.pki.leaf("one.console.test"), fleet.pki.leaf("two.console.test")
    client = fleet.pki.intermediate.issue("client.console.test", client=True)
    a_id = fleet.upload(a, "alpha")
    fleet.upload(b, "bravo")
    fleet.upload(s1, "one")
    fleet.upload(s2, "two")
    fleet.upload(fleet.pki.root, "console root", "Ca")
    lid = fleet.listener(a_id)
    assert eventually(lambda: fleet.echoes(), 10)

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{fleet.serve.url}/")
    expect(page.get_by_role("cell", name=lid)).to_be_visible()
    _shot(page, tmp_path, "listeners")
    page.get_by_role("link", name="Manage Certificates").click()
    expect(page.get_by_role("tab", name="Server Certificate")).to_have_attribute(
        "aria-selected", "true"
    )

    page.get_by_role("button", name="Change").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Certificate", exact=True).select_option(label="bravo (b.console.test)")
    page.get_by_role("button", name="OK").click()
    expect(page.get_by_role("status")).to_contain_text("default certificate was changed")
    assert fleet.served("a.console.test") == b.fingerprint

    page.get_by_role("button", name="Add Additional Certificate").click()
    page.get_by_label("Certificates", exact=True).select_option(
        label=["one (one.console.test)", "two (two.console.test)"]
    )
    _shot(page, tmp_path, "add-additional")
    page.get_by_role("button", name="OK").click()
    assert fleet.served("one.console.test") == s1.fingerprint
    assert fleet.served("two.console.test") == s2.fingerprint
    _shot(page, tmp_path, "server-certificate")

    page.get_by_role("row").filter(has_text="two.console.test").get_by_role(
        "button", name="Delete"
    ).click()
    expect(page.get_by_role("row").filter(has_text="two.console.test")).to_have_count(0)
    assert fleet.served("two.console.test") == b.fingerprint
    assert fleet.served("one.console.test") == s1.fingerprint

    page.get_by_role("tab", name="CA Certificate").click()
    switch = page.get_by_role("switch", name="Mutual Authentication")
    expect(switch).to_have_attribute("aria-checked", "false")
    switch.click()
    ca_select = page.get_by_role("dialog").get_by_label("CA Certificate", exact=True)
    ca_select.select_option(label="console root (console root CA)")
    page.get_by_role("button", name="OK").click()
    expect(switch).to_have_attribute("aria-checked", "true")
    _shot(page, tmp_path, "ca-certificate")
    assert not fleet.echoes()
    assert fleet.echoes(client, str(tmp_path))
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "false")
    assert fleet.echoes()

    page.get_by_role("tab", name="History").click()
    page.get_by_role("button", name="Roll Back").click()
    expect(page.get_by_role("status")).to_contain_text("previous default certificate")
    assert fleet.served("a.console.test") == a.fingerprint
    expect(page.get_by_role("cell", name="console", exact=True).first).to_be_visible()
    _shot(page, tmp_path, "history")


def test_a_refused_upload_shows_its_code_and_stores_nothing(
    browser: Browser, fleet: Fleet, tmp_path: Path
) -> None:
    """Uploading a certificate with another's key shows KeyCertificateMismatch on the page,
    stores nothing and leaves the key field empty; the Certificates page is readable at 375 px."""
    leaf, stranger = fleet.pki.leaf("c.console.test"), fleet.pki.leaf("d.console.test")
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(f"{fleet.serve.url}/console/")
    page.get_by_role("link", name="Certificates", exact=True).click()
    page.get_by_role("button", name="Upload Certificate").click()
    page.get_by_label("Name").fill("mismatched")
    page.get_by_label("Type", exact=True).select_option("Server")
    page.get_by_label("Certificate (PEM)").fill(leaf.chain_pem)
    page.get_by_label("Private Key (PEM)").fill(stranger.key_pem)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("KeyCertificateMismatch")
    expect(page.get_by_label("Private Key (PEM)")).to_have_value("")
    _shot(page, tmp_path, "upload-refused")
    assert fleet.call("ListCertificates")["TotalCount"] == 0
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    page.get_by_role("link", name="Alerts", exact=True).click()
    page.get_by_role("button", name="Scan Now").click()
    expect(page.get_by_role("status")).to_contain_text("Scan")
    _shot(page, tmp_path, "alerts")


def test_log_in_with_the_token_and_a_forged_form_is_refused(
    browser: Browser, guarded: Fleet, tmp_path: Path
) -> None:
    """With api.token set the console asks for it; after logging in, a form posted without
    its CSRF token is refused with 403 and changes nothing."""
    cert_id = guarded.upload(guarded.pki.leaf("a.console.test"), "alpha")
    other = guarded.upload(guarded.pki.leaf("b.console.test"), "bravo")
    lid = guarded.listener(cert_id)
    page = browser.new_page()
    page.goto(f"{guarded.serve.url}/console/")
    page.get_by_label("Token").fill("not the token")
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("alert")).to_contain_text("Unauthorized")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("link", name="Manage Certificates")).to_be_visible()
    _shot(page, tmp_path, "logged-in")
    forged = page.request.post(
        f"{guarded.serve.url}/console/listeners/{lid}/default", form={"CertificateId": other}
    )
    assert forged.status == 403
    assert "InvalidCsrfToken" in forged.text()
    listener = guarded.call("GetListenerAttribute", ListenerId=lid)
    assert listener["CertificateIds"] == [cert_id]


def _axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2 A/AA and
    best practices), each with the rule id, its help and the offending elements."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "async () => { const r = await axe.run(); "
        "return {passes: r.passes.length, violations: r.violations}; }"
    )
    assert result["passes"] > 10, f"axe checked next to nothing on {page.url}"
    found: list[dict[str, Any]] = result["violations"]
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["html"] for n in v["nodes"]][:5],
        }
        for v in found
        if v["impact"] in BLOCKING
    ]


def test_every_console_page_passes_axe(browser: Browser, guarded: Fleet) -> None:
    """axe-core finds no serious or critical accessibility violation on any console page:
    login (with and without a refusal), Listeners, Manage certificates (each tab and each
    dialog, with Rotate Now offered), Certificates (filtered, upload form), certificate
    details, Alerts (after a scan)."""
    a = guarded.pki.leaf("a.console.test")
    a_id = guarded.upload(a, "alpha")
    guarded.upload(guarded.pki.leaf("b.console.test"), "bravo")
    soon = guarded.upload(guarded.pki.leaf("soon.console.test", days=5), "soon")
    guarded.upload(guarded.pki.root, "console root", "Ca")
    lid = guarded.listener(a_id)
    guarded.call(
        "AssociateAdditionalCertificatesWithListener", ListenerId=lid,
        AdditionalCertificateIds=[soon],
    )
    renewal = guarded.pki.leaf("a.console.test", days=120)
    staged = guarded.call(
        "StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem,
        ListenerId=lid,
    )
    assert staged["Status"] == "Pending", staged
    guarded.call("ScanNow")
    assert guarded.call("ListAlerts")["Alerts"], "the 5-day certificate raises an alert"
    base = guarded.serve.url
    # The console's CSP allows no script; axe is injected by the test, so CSP is bypassed.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    seen: dict[str, list[dict[str, Any]]] = {}

    def check(name: str, url: str | None = None) -> None:
        if url is not None:
            page.goto(base + url)
        seen[name] = _axe_violations(page)

    check("login", "/console/login")
    page.get_by_label("Token").fill("not the token")
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("alert")).to_contain_text("Unauthorized")
    check("login refused")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("link", name="Manage Certificates")).to_be_visible()
    check("listeners")
    here = f"/console/listeners/{lid}"
    check("server tab", f"{here}?tab=server")
    expect(page.get_by_role("button", name="Rotate Now")).to_be_visible()
    check("change dialog", f"{here}?tab=server&dialog=default")
    check("add dialog", f"{here}?tab=server&dialog=add")
    check("ca tab", f"{here}?tab=ca")
    check("ca-on dialog", f"{here}?tab=ca&dialog=ca-on")
    check("history tab", f"{here}?tab=history")
    check("certificates", "/console/certificates")
    check("certificates filtered", "/console/certificates?type=Server&expiring=30")
    check("upload form", "/console/certificates?dialog=upload")
    check("certificate details", f"/console/certificates/{a_id}")
    check("alerts", "/console/alerts")
    expect(page.get_by_role("cell", name="No alerts.")).to_have_count(0)
    page.get_by_role("button", name="Scan Now").click()
    expect(page.get_by_role("status")).to_contain_text("Scan")
    check("alerts after scan")
    context.close()
    assert len(seen) == 15
    assert {name: found for name, found in seen.items() if found} == {}


def test_rotate_now_by_clicking(browser: Browser, fleet: Fleet, tmp_path: Path) -> None:
    """A renewal staged through the API is offered as `Rotate Now`; clicking it rotates the
    listener (a real TLS client then gets the new leaf) and History shows the rotation by
    the console, Applied."""
    old = fleet.pki.leaf("a.console.test")
    old_id = fleet.upload(old, "alpha")
    fleet.upload(fleet.pki.root, "console root", "Ca")
    lid = fleet.listener(old_id)
    assert eventually(lambda: fleet.echoes(), 10)
    assert fleet.served("a.console.test") == old.fingerprint
    renewal = fleet.pki.leaf("a.console.test", days=120)
    staged = fleet.call(
        "StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem,
        ListenerId=lid,
    )
    assert staged["Status"] == "Pending", staged

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{fleet.serve.url}/console/listeners/{lid}")
    page.get_by_role("button", name="Rotate Now").click()
    expect(page.get_by_role("status")).to_contain_text("rotation ran")
    expect(page.get_by_role("tab", name="History")).to_have_attribute("aria-selected", "true")
    assert fleet.served("a.console.test") == renewal.fingerprint
    assert fleet.echoes()
    newest = page.get_by_role("row").nth(1)
    expect(newest).to_contain_text("console")
    expect(newest).to_contain_text("Applied")
    expect(newest).to_contain_text(old_id)
    _shot(page, tmp_path, "rotated")
    events = fleet.call("ListRotationEvents", ListenerId=lid)["RotationEvents"]
    assert events[0]["Actor"] == "console"
    assert events[0]["Result"] == "Applied"
    assert events[0]["OldCertificateId"] == old_id
    expect(page.get_by_role("button", name="Rotate Now")).to_have_count(0)
    staged_now = fleet.call("ListStagedCertificates")["StagedCertificates"]
    assert [s["Status"] for s in staged_now] == ["Applied"]


def test_the_axe_check_reports_a_known_violation(browser: Browser) -> None:
    """The check itself works: an unlabelled field and an image without text are reported
    as critical (so a clean console page is clean, not unchecked)."""
    page = browser.new_page()
    page.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
        '<input type="text"><img src="data:,"></main></body></html>'
    )
    ids = {v["id"] for v in _axe_violations(page)}
    assert ids == {"label", "image-alt"}
    page.close()


def test_docs_page_renders_from_same_origin_assets(browser: Browser, fleet: Fleet) -> None:
    """/docs in chromium: Swagger UI renders every action from /openapi.json, every request
    the page makes goes to certwatch itself and succeeds, and the CSP blocks nothing."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requested: list[tuple[str, int]] = []
    page.on("response", lambda r: requested.append((r.url, r.status)))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{fleet.serve.url}/docs")
    expect(page.get_by_role("heading", name=re.compile("^certwatch"))).to_be_visible()
    expect(page.get_by_text("/v1/ListCertificates", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
    page.wait_for_load_state("networkidle")
    origins = {urlsplit(url).netloc for url, _ in requested if not url.startswith("data:")}
    assert origins == {urlsplit(fleet.serve.url).netloc}, requested
    paths = {urlsplit(url).path for url, _ in requested}
    assert {"/docs", "/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css",
            "/openapi.json"} <= paths, paths
    assert all(status == 200 for _, status in requested), requested
    assert failed == []
    assert blocked == []
    page.close()


def _stage_by_clicking(page: Page, renewal: Issued, key_pem: str, listener: str) -> None:
    """Fill the Stage Certificate form (chain of `renewal`, key `key_pem`) and press Stage."""
    page.get_by_label("Certificate (PEM)").fill(renewal.chain_pem)
    page.get_by_label("Private Key (PEM)").fill(key_pem)
    page.get_by_label("Listener", exact=True).select_option(listener)
    page.get_by_role("button", name="Stage", exact=True).click()


def test_stage_a_certificate_by_clicking(browser: Browser, fleet: Fleet, tmp_path: Path) -> None:
    """On the Staged page at 375 px, a renewal with another's key is refused with its code and
    stages nothing; the right key stages it Pending for the listener, listed with its source
    and when it rotates; Rotate Now then puts it on the listener (a real TLS client sees it)."""
    old_id = fleet.upload(fleet.pki.leaf("a.console.test"), "alpha")
    fleet.upload(fleet.pki.root, "console root", "Ca")
    lid = fleet.listener(old_id)
    assert eventually(lambda: fleet.echoes(), 10)
    renewal, stranger = fleet.pki.leaf("a.console.test", days=120), fleet.pki.leaf("x.test")

    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(f"{fleet.serve.url}/console/")
    page.get_by_role("link", name="Staged", exact=True).click()
    expect(page.get_by_role("cell", name="Nothing is staged.")).to_be_visible()
    _stage_by_clicking(page, renewal, stranger.key_pem, lid)
    expect(page.get_by_role("alert")).to_contain_text("KeyCertificateMismatch")
    expect(page.get_by_label("Private Key (PEM)")).to_have_value("")
    expect(page.get_by_label("Listener", exact=True)).to_have_value(lid)
    assert fleet.call("ListStagedCertificates")["StagedCertificates"] == []
    _shot(page, tmp_path, "stage-refused")

    _stage_by_clicking(page, renewal, renewal.key_pem, lid)
    expect(page.get_by_role("status")).to_contain_text("The certificate was staged")
    [staged] = fleet.call("ListStagedCertificates")["StagedCertificates"]
    row = page.get_by_role("row").filter(has_text=staged["StagedCertificateId"])
    for text in ("a.console.test", lid, "api", "Pending", "or on Rotate Now"):
        expect(row).to_contain_text(text)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    _shot(page, tmp_path, "staged")

    row.get_by_role("link", name=lid).click()
    page.get_by_role("button", name="Rotate Now").click()
    expect(page.get_by_role("status")).to_contain_text("rotation ran")
    assert fleet.served("a.console.test") == renewal.fingerprint
    page.get_by_role("link", name="Staged", exact=True).click()
    expect(page.get_by_role("row").filter(has_text=staged["StagedCertificateId"])).to_contain_text(
        "Applied"
    )


def test_the_requests_page_without_acme_says_so_and_shows_the_refusal(
    browser: Browser, fleet: Fleet, tmp_path: Path
) -> None:
    """Without [acme] the Requests page says ACME is not configured; a request from its form
    shows AcmeNotConfigured and keeps the names typed; no request is kept."""
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(f"{fleet.serve.url}/console/")
    page.get_by_role("link", name="Requests", exact=True).click()
    expect(page.get_by_text("ACME is not configured")).to_be_visible()
    page.get_by_label("Domain names").fill("www.console.test")
    page.get_by_role("button", name="Request", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("AcmeNotConfigured")
    expect(page.get_by_label("Domain names")).to_have_value("www.console.test")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    _shot(page, tmp_path, "requests-no-acme")
    assert fleet.call("ListCertificateRequests")["CertificateRequests"] == []


def test_a_certificate_requested_by_clicking_is_issued_by_pebble_and_renewed(
    browser: Browser, pebble: Pebble, tmp_path: Path
) -> None:
    """Against a real Pebble (http-01): a request placed from the form is listed Pending, then
    Issued with a link to its Managed certificate, whose Renew button places a renewal; axe
    finds nothing serious on the Requests page with rows and a Renew button, nor on the
    details page with its Renew button."""
    serve = serve_acme(tmp_path, pebble, "http-01")
    context = browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{serve.url}/console/requests")
        expect(page.get_by_text("ACME is not configured")).to_have_count(0)
        page.get_by_label("Domain names").fill("www.console.test, api.console.test")
        page.get_by_role("button", name="Request", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("request was placed")
        row = page.get_by_role("row").filter(has_text="www.console.test, api.console.test")
        expect(row).to_contain_text("Pending")
        _shot(page, tmp_path, "request-pending")

        def issued() -> bool:
            page.reload()
            return "Issued" in row.inner_text()

        assert eventually(issued, 60), serve.output()
        _shot(page, tmp_path, "request-issued")
        assert _axe_violations(page) == []
        row.get_by_role("link", name=re.compile("^cert-")).click()
        expect(page.get_by_role("heading", name="Renewal")).to_be_visible()
        cert_id = page.url.rsplit("/", 1)[1]
        renewal_at = httpx.post(
            f"{serve.url}/v1/GetCertificate", json={"CertificateId": cert_id}, timeout=30
        ).json()["Certificate"]["RenewalAt"]
        expect(page.get_by_text(f"renewed from {renewal_at}")).to_be_visible()
        assert _axe_violations(page) == []
        page.get_by_role("button", name="Renew", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("renewal was requested")
        renewal = page.get_by_role("row").filter(has_text="Renewal")
        expect(renewal).to_contain_text("www.console.test")
        requests = httpx.post(
            f"{serve.url}/v1/ListCertificateRequests", json={}, timeout=30
        ).json()["CertificateRequests"]
        assert [r["Renewal"] for r in requests] == [True, False]
    finally:
        context.close()
        serve.stop()


def test_the_staged_and_requests_pages_pass_axe(browser: Browser, guarded: Fleet) -> None:
    """axe-core finds no serious or critical violation on the Staged page (with Pending and
    Rejected rows, and with a refusal) and the Requests page (empty, and with a refusal)."""
    a_id = guarded.upload(guarded.pki.leaf("a.console.test"), "alpha")
    guarded.upload(guarded.pki.root, "console root", "Ca")
    lid = guarded.listener(a_id)
    renewal = guarded.pki.leaf("a.console.test", days=120)
    guarded.call(
        "StageCertificate", Certificate=renewal.chain_pem, PrivateKey=renewal.key_pem,
        ListenerId=lid,
    )
    other = guarded.pki.leaf("other.console.test", days=120)
    rejected = guarded.call(
        "StageCertificate", Certificate=other.chain_pem, PrivateKey=other.key_pem, ListenerId=lid
    )
    assert rejected["Status"] == "Rejected", rejected
    base = guarded.serve.url
    context = browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/console/login")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log In").click()
    seen: dict[str, list[dict[str, Any]]] = {}
    page.get_by_role("link", name="Staged", exact=True).click()
    expect(page.get_by_role("cell", name="Rejected", exact=True)).to_be_visible()
    seen["staged"] = _axe_violations(page)
    page.get_by_label("Certificate (PEM)").fill("not a pem")
    page.get_by_label("Private Key (PEM)").fill(other.key_pem)
    page.get_by_role("button", name="Stage", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("InvalidCertificate")
    seen["staged refused"] = _axe_violations(page)
    page.get_by_role("link", name="Requests", exact=True).click()
    expect(page.get_by_role("cell", name="No certificate requests.")).to_be_visible()
    seen["requests"] = _axe_violations(page)
    page.get_by_label("Domain names").fill("www.console.test")
    page.get_by_role("button", name="Request", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("AcmeNotConfigured")
    seen["requests refused"] = _axe_violations(page)
    context.close()
    assert {name: found for name, found in seen.items() if found} == {}
