"""Directory intake: stage the certificates dropped into `rotation.staging_dir`, once each.

A drop is a PEM file (`.pem`, `.crt`, `.cer`) holding the chain and the key, a
`name.crt` + `name.key` pair, a PKCS#12 file (`.pfx`, `.p12`, opened with
`rotation.pkcs12_password` or the first line of `rotation.pkcs12_password_file`), or a DER
leaf (`.der`, or a `.cer` that is not PEM text) with its `name.key` (PEM or DER). Other names
(e.g. `*.tmp`, dot files) are ignored. A drop is left alone while half-written: modified
within the last `SETTLE_SECONDS`, a PEM block without its END line, a DER structure shorter
than it says, or a pair with one half missing. Once read it is staged by the rules of
`StageCertificate` and moved (never deleted) to `processed/` or `rejected/` beside it, with a
`<file>.reason` saying what happened. What is kept there is 0600 in a 0700 folder and holds
no private key: the key is stored encrypted once staged (and of no use when rejected), so the
moved file keeps only its certificate blocks (a pair's `.key` is left empty; a PKCS#12 file
is replaced by its certificates as PEM, or left empty when it could not be opened) and its
`.reason` says the key was removed.

Intake runs before each scan and, with `rotation.watch`, when the folder changes; one intake
runs at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from certwatch import clock, errors
from certwatch.node import Node
from certwatch.pki import formats
from certwatch.pki.pem import complete, split_pem
from certwatch.private_files import DIR_MODE, FILE_MODE, write_private
from certwatch.rotation.staged import FILE_ACTOR, stage
from certwatch.store.models import StagedStatus

log = logging.getLogger(__name__)
SETTLE_SECONDS = 2.0
PEM_SUFFIXES = (".pem", ".crt", ".cer")
PKCS12_SUFFIXES = (".pfx", ".p12")
DER_SUFFIXES = (".der", ".cer")
PAIRED_SUFFIXES = (".crt", ".der", ".cer")
KEY_REMOVED = {
    "processed": "private key removed from this copy (stored encrypted when staged)",
    "rejected": "private key removed from this copy (not kept)",
}
PFX_KEPT = "the PKCS#12 file is replaced here by its certificates as PEM, without any key"
PFX_EMPTIED = "the PKCS#12 file is emptied here: it could not be opened and may hold a key"
_ONE_INTAKE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class Drop:
    """One settled, complete drop: its files, their bytes as read, and its format."""

    paths: list[Path]
    contents: list[bytes]
    fmt: formats.CertificateFormat

    @property
    def names(self) -> str:
        """The file names, for logs and reasons."""
        return " + ".join(p.name for p in self.paths)


def _is_pem(raw: bytes) -> bool:
    return b"-----BEGIN " in raw


def _der_complete(raw: bytes) -> bool:
    """False only for a DER SEQUENCE shorter than its header says (still being written)."""
    if len(raw) < 2 or raw[0] != 0x30:
        return True
    first = raw[1]
    if first < 0x80:
        return len(raw) >= 2 + first
    width = first & 0x7F
    if width == 0 or width > 4 or len(raw) < 2 + width:
        return len(raw) >= 2 + width
    return len(raw) >= 2 + width + int.from_bytes(raw[2 : 2 + width], "big")


def _format(path: Path, raw: bytes) -> formats.CertificateFormat:
    suffix = path.suffix.lower()
    if suffix in PKCS12_SUFFIXES:
        return "PKCS12"
    if suffix in DER_SUFFIXES and not _is_pem(raw):
        return "DER"
    return "PEM"


def _complete(raw: bytes) -> bool:
    return complete(raw.decode(errors="replace")) if _is_pem(raw) else _der_complete(raw)


def drops(directory: Path, now: float) -> list[Drop]:
    """The complete, settled drops in `directory` (PEM files, crt/der + key pairs, PKCS#12
    files), each with the bytes of each file as read."""
    found: list[Drop] = []
    suffixes = (*PEM_SUFFIXES, *PKCS12_SUFFIXES, *DER_SUFFIXES)
    for path in sorted(directory.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or path.name.startswith(".") or suffix not in suffixes:
            continue
        key = path.with_suffix(".key")
        paired = suffix in PAIRED_SUFFIXES and key.is_file()
        group = [path, key] if paired else [path]
        try:
            contents = [p.read_bytes() for p in group]
            settled = all(now - p.stat().st_mtime >= SETTLE_SECONDS for p in group)
        except OSError:
            continue
        if not settled or not all(_complete(raw) for raw in contents):
            continue
        fmt = _format(path, contents[0])
        waits_for_key = suffix == ".crt" and not split_pem(contents[0].decode(errors="replace"))[1]
        if not paired and (waits_for_key or fmt == "DER"):
            continue
        found.append(Drop(group, contents, fmt))
    return found


def _password(node: Node) -> str | None:
    """`rotation.pkcs12_password`, or the first line of `rotation.pkcs12_password_file`."""
    rotation = node.config.rotation
    if rotation.pkcs12_password_file is None:
        return rotation.pkcs12_password
    lines = Path(rotation.pkcs12_password_file).read_text().splitlines()
    return lines[0] if lines else ""


def _key_pem(raw: bytes) -> str:
    """A `.key` file's key as PEM (it may be PEM or DER); "" when it holds none."""
    if _is_pem(raw):
        return split_pem(raw.decode(errors="replace"))[1]
    try:
        return formats.der_key_to_pem(raw)
    except formats.FormatError as exc:
        raise errors.BadRequest(f"{exc.message} (name.key)", code=exc.code) from exc


def read_drop(drop: Drop, password: str | None) -> tuple[str, str]:
    """The drop's (chain PEM, key PEM), either "" when the drop has none; ApiError with the
    upload rules' Code when it cannot be read."""
    try:
        if drop.fmt == "PKCS12":
            pem = formats.from_pkcs12(drop.contents[0], password)
            return pem.chain_pem, pem.key_pem or ""
        if drop.fmt == "DER":
            return formats.from_der(drop.contents[0]), _key_pem(drop.contents[1])
    except formats.FormatError as exc:
        raise errors.BadRequest(exc.message, code=exc.code) from exc
    return split_pem("".join(c.decode(errors="replace") for c in drop.contents))


def _without_key(path: Path, raw: bytes, drop: Drop, chain: str | None) -> bytes | None:
    """What the moved copy of `path` keeps when it held a private key (None: it held none)."""
    if drop.fmt == "PKCS12" and path == drop.paths[0]:
        return (chain or "").encode()
    if _is_pem(raw):
        certificates, key = split_pem(raw.decode(errors="replace"))
        return certificates.encode() if key else None
    return b"" if path.suffix == ".key" and raw else None


def _move(drop: Drop, verdict: str, reason: str, chain: str | None) -> None:
    """Move the drop's files into `verdict`/ beside them, each without its private key (see
    the module's rules; `chain` is what a PKCS#12 file is replaced by), each with a
    `.reason`."""
    target = drop.paths[0].parent / verdict
    target.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(target, DIR_MODE)
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%f")
    for path, raw in zip(drop.paths, drop.contents, strict=True):
        dest = target / path.name
        if dest.exists():
            dest = target / f"{path.stem}-{stamp}{path.suffix}"
        path.rename(dest)
        os.chmod(dest, FILE_MODE)
        lines = [reason]
        kept = _without_key(path, raw, drop, chain)
        if kept is not None:
            write_private(dest, kept)
            if drop.fmt == "PKCS12" and path == drop.paths[0]:
                lines.append(PFX_KEPT if kept else PFX_EMPTIED)
            else:
                lines.append(KEY_REMOVED[verdict])
        write_private(dest.with_name(dest.name + ".reason"), "\n".join(lines).encode() + b"\n")


def intake(node: Node) -> None:
    """Scan hook: stage every complete drop in the staging directory and move it aside; a
    drop that cannot be staged goes to `rejected/` with its reason, and the next one goes on."""
    directory = node.config.staging_dir
    if not directory.is_dir():
        return
    with _ONE_INTAKE_AT_A_TIME:
        found = drops(directory, clock.now().timestamp())
        password: str | None = None
        try:
            if any(d.fmt == "PKCS12" for d in found):
                password = _password(node)
        except OSError as exc:
            log.error(
                "rotation.pkcs12_password_file cannot be read (%s): PKCS#12 drops wait",
                exc.strerror,
            )
            found = [d for d in found if d.fmt != "PKCS12"]
        for drop in found:
            _stage_one(node, drop, password)


def _stage_one(node: Node, drop: Drop, password: str | None) -> None:
    """Stage one drop and move it to processed/ or rejected/."""
    chain: str | None = None
    try:
        chain, key = read_drop(drop, password)
        if not chain:
            raise errors.BadRequest(
                "no certificate in the file (no PEM CERTIFICATE block)",
                code="InvalidCertificate",
            )
        if not key:
            raise errors.MissingPrivateKey(
                "no private key in the file (PEM, PKCS#12 or name.key)"
            )
        work = partial(stage, node, chain_pem=chain, key_pem=key, listener_id=None)
        entry = node.changes.run(work, actor=FILE_ACTOR)
    except errors.ApiError as exc:
        _move(drop, "rejected", f"{exc.code}: {exc.message}", chain)
        log.warning(
            "staging %s rejected: %s", drop.names, exc.message, extra={"code": exc.code}
        )
        return
    if entry.status == StagedStatus.REJECTED:
        _move(drop, "rejected", f"Rejected ({entry.id}): {entry.reason}", chain)
    else:
        _move(drop, "processed", f"{entry.status}: staged as {entry.id}", chain)
    log.info(
        "staged %s as %s: %s", drop.names, entry.id, entry.status,
        extra={"staged_certificate_id": entry.id, "certificate_id": entry.certificate_id},
    )
