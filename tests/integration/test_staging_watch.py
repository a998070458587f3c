"""`certwatch serve` watching its staging folder: a certbot-style deploy hook's files are
staged within seconds while the next scan is an hour away."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.certfactory import Pki, make_pki
from tests.integration.servers import ServeProcess
from tests.support import eventually

DEPLOY_HOOK = """#!/bin/sh
# As certbot runs a --deploy-hook: RENEWED_LINEAGE names the live folder of the renewal.
set -e
cp "$RENEWED_LINEAGE/fullchain.pem" "$STAGING/site.crt"
cp "$RENEWED_LINEAGE/privkey.pem" "$STAGING/site.key"
"""


def _serve(tmp_path: Path, pki: Pki, watch: bool) -> ServeProcess:
    """A serve whose scans are an hour apart, trusting `pki`'s root."""
    (tmp_path / "root.pem").write_text(pki.root_pem)
    toml = (
        f'[scan]\ninterval = "1h"\ntrusted_ca_file = "{tmp_path / "root.pem"}"\n'
        f"[rotation]\nwatch = {'true' if watch else 'false'}\n"
    )
    return ServeProcess(tmp_path, toml).start()


def _first_scan_done(serve: ServeProcess) -> bool:
    """Whether the scan at start has finished (so it cannot be what stages the drop)."""
    text = httpx.get(f"{serve.url}/metrics", timeout=5).text
    found = re.search(r"^certwatch_scan_last_success_timestamp_seconds (\S+)$", text, re.M)
    return found is not None and float(found.group(1)) > 0


def _deploy(tmp_path: Path, pki: Pki) -> None:
    """Run the deploy hook over a fresh lineage (fullchain.pem, privkey.pem)."""
    lineage = tmp_path / "live" / "site"
    lineage.mkdir(parents=True)
    leaf = pki.leaf("watch.example.com", days=90)
    (lineage / "fullchain.pem").write_text(leaf.chain_pem)
    (lineage / "privkey.pem").write_text(leaf.key_pem)
    hook = tmp_path / "deploy-hook.sh"
    hook.write_text(DEPLOY_HOOK)
    hook.chmod(0o700)
    staging = tmp_path / "data" / "staging"
    staging.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "RENEWED_LINEAGE": str(lineage), "STAGING": str(staging)}
    subprocess.run([str(hook)], env=env, check=True, timeout=10)


def _staged(serve: ServeProcess) -> list[dict[str, object]]:
    answer = httpx.post(f"{serve.url}/v1/ListStagedCertificates", json={}, timeout=10)
    return list(answer.json()["StagedCertificates"])


def test_a_deploy_hooks_files_are_staged_within_seconds(tmp_path: Path) -> None:
    """With rotation.watch (the default) the crt/key the hook copies are staged within 10 s
    and moved to processed/; SIGTERM still exits 0 with the watcher running."""
    pki = make_pki("watch")
    serve = _serve(tmp_path, pki, watch=True)
    try:
        assert eventually(lambda: _first_scan_done(serve), 20), serve.output()
        _deploy(tmp_path, pki)
        started = time.monotonic()
        assert eventually(lambda: len(_staged(serve)) == 1, 10), serve.output()
        took = time.monotonic() - started
        [entry] = _staged(serve)
        assert entry["Status"] == "Pending", entry
        processed = tmp_path / "data" / "staging" / "processed"
        assert {"site.crt", "site.key"} <= {p.name for p in processed.iterdir()}
        assert took < 10
    finally:
        assert serve.stop() == 0
    assert "Traceback" not in serve.output()


def test_without_watch_a_drop_waits_for_the_next_scan(tmp_path: Path) -> None:
    """With rotation.watch = false the same drop is still unstaged 6 s later (the next scan
    is an hour away)."""
    pki = make_pki("nowatch")
    serve = _serve(tmp_path, pki, watch=False)
    try:
        assert eventually(lambda: _first_scan_done(serve), 20), serve.output()
        _deploy(tmp_path, pki)
        time.sleep(6)
        assert _staged(serve) == []
        assert (tmp_path / "data" / "staging" / "site.crt").exists()
    finally:
        assert serve.stop() == 0
