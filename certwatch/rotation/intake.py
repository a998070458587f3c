"""Directory intake: stage the certificates dropped into `rotation.staging_dir`, once each.

A drop is a PEM file (`.pem`, `.crt`, `.cer`) holding the chain and the key, or a
`name.crt` + `name.key` pair. Other names (e.g. `*.tmp`, dot files) are ignored. A drop is
left alone while half-written: modified within the last `SETTLE_SECONDS`, a PEM block
without its END line, or a pair with one half missing. Once read it is staged by the rules of
`StageCertificate` and moved (never deleted) to `processed/` or `rejected/` beside it, with a
`<file>.reason` saying what happened. What is kept there is 0600 in a 0700 folder and holds
no private key: the key is stored encrypted once staged (and of no use when rejected), so the
moved file keeps only its certificate blocks (a pair's `.key` is left empty) and its `.reason`
says the key was removed.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

from certwatch import clock, errors
from certwatch.node import Node
from certwatch.pki.pem import complete, split_pem
from certwatch.private_files import DIR_MODE, FILE_MODE, write_private
from certwatch.rotation.staged import FILE_ACTOR, stage
from certwatch.store.models import StagedStatus

log = logging.getLogger(__name__)
SETTLE_SECONDS = 2.0
PEM_SUFFIXES = (".pem", ".crt", ".cer")
KEY_REMOVED = {
    "processed": "private key removed from this copy (stored encrypted when staged)",
    "rejected": "private key removed from this copy (not kept)",
}


def drops(directory: Path, now: float) -> list[tuple[list[Path], list[str]]]:
    """The complete, settled drops in `directory` (single PEM files and crt/key pairs), each
    with the text of each file as read."""
    found: list[tuple[list[Path], list[str]]] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix not in PEM_SUFFIXES:
            continue
        key = path.with_suffix(".key")
        group = [path, key] if path.suffix == ".crt" and key.is_file() else [path]
        try:
            texts = [p.read_text(errors="replace") for p in group]
            settled = all(now - p.stat().st_mtime >= SETTLE_SECONDS for p in group)
        except OSError:
            continue
        if not settled or not all(complete(t) for t in texts):
            continue
        if len(group) == 1 and path.suffix == ".crt" and not split_pem(texts[0])[1]:
            continue
        found.append((group, texts))
    return found


def _move(paths: list[Path], texts: list[str], verdict: str, reason: str) -> None:
    target = paths[0].parent / verdict
    target.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(target, DIR_MODE)
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%f")
    for path, text in zip(paths, texts, strict=True):
        dest = target / path.name
        if dest.exists():
            dest = target / f"{path.stem}-{stamp}{path.suffix}"
        path.rename(dest)
        os.chmod(dest, FILE_MODE)
        lines = [reason, *_remove_keys(dest, text, verdict)]
        write_private(dest.with_name(dest.name + ".reason"), "\n".join(lines).encode() + b"\n")


def _remove_keys(path: Path, text: str, verdict: str) -> list[str]:
    """Rewrite the moved file `path` (read as `text`) with its certificate blocks only when it
    holds a private key; the line for its `.reason` saying so, if it did."""
    certificates, key = split_pem(text)
    if not key:
        return []
    write_private(path, certificates.encode())
    return [KEY_REMOVED[verdict]]


def intake(node: Node) -> None:
    """Scan hook: stage every complete drop in the staging directory and move it aside; a
    drop that cannot be staged goes to `rejected/` with its reason, and the next one goes on."""
    directory = node.config.staging_dir
    if not directory.is_dir():
        return
    for group, texts in drops(directory, clock.now().timestamp()):
        chain, key = split_pem("".join(texts))
        names = " + ".join(p.name for p in group)
        try:
            if not chain:
                raise errors.BadRequest(
                    "no certificate in the file (no PEM CERTIFICATE block)",
                    code="InvalidCertificate",
                )
            if not key:
                raise errors.MissingPrivateKey("no private key in the file (PEM or name.key)")
            work = partial(stage, node, chain_pem=chain, key_pem=key, listener_id=None)
            entry = node.changes.run(work, actor=FILE_ACTOR)
        except errors.ApiError as exc:
            _move(group, texts, "rejected", f"{exc.code}: {exc.message}")
            log.warning("staging %s rejected: %s", names, exc.message)
            continue
        if entry.status == StagedStatus.REJECTED:
            _move(group, texts, "rejected", f"Rejected ({entry.id}): {entry.reason}")
        else:
            _move(group, texts, "processed", f"{entry.status}: staged as {entry.id}")
        log.info(
            "staged %s as %s: %s", names, entry.id, entry.status,
            extra={"staged_certificate_id": entry.id, "certificate_id": entry.certificate_id},
        )
