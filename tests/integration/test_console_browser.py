"""The console in a real browser (Debian's chromium through Playwright) against a real
`certwatch serve`: each change made by clicking is seen by a real TLS client."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.integration.servers import ServeProcess
from tests.support import eventually, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
TOKEN = "browser-test-token"

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
