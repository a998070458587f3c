"""The README's console screenshot, taken afresh against the demo.

    .venv/bin/python -m tests.integration.screenshot [--out docs/console.png] [--page certificates]

Starts `certwatch serve --demo` on free loopback ports in a temporary folder, runs a scan (so
the expiring demo certificate has its alert), opens the console in Debian's chromium
(Playwright, `/usr/bin/chromium`) and saves one viewport-sized PNG.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from tests.integration.servers import ServeProcess
from tests.support import free_port

ROOT = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PAGES = {
    "listeners": "/console/",
    "certificates": "/console/certificates",
    "alerts": "/console/alerts",
}
VIEWPORT = {"width": 1000, "height": 400}
LIMIT = 200_000
"""The largest PNG the README should carry (bytes)."""


def take(out: Path, page_name: str) -> int:
    """Serve the demo, open the console page `page_name` and save it to `out`; its size."""
    with tempfile.TemporaryDirectory(prefix="certwatch-shot-") as tmp:
        serve = ServeProcess(Path(tmp))
        serve.start("--demo", "--demo-port", str(free_port()))
        try:
            httpx.post(f"{serve.url}/v1/ScanNow", json={}, timeout=60).raise_for_status()
            with sync_playwright() as play:
                browser = play.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.goto(serve.url + PAGES[page_name])
                page.wait_for_load_state("networkidle")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=False)
                browser.close()
        finally:
            serve.stop()
    return out.stat().st_size


def main() -> int:
    """Take the screenshot; exit 1 when it is larger than the README should carry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    parser.add_argument("--page", choices=sorted(PAGES), default="certificates")
    args = parser.parse_args()
    size = take(args.out, args.page)
    print(f"{args.out}: {size} bytes")
    return 0 if size < LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
