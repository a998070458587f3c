"""Files and folders only the service's user may use: 0600 / 0700 whatever the process umask.

A mode given to `open`/`mkdir` is narrowed by the umask, never widened past it, and a umask
such as 0o277 would make it too narrow, so every new file and folder is also chmod-ed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from certwatch.config import ConfigError

FILE_MODE = 0o600
DIR_MODE = 0o700


class UnsafeFileMode(ConfigError):
    """A secret file others may read or write; the message names it, its mode and the fix."""


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each 0700; folders already there are left alone."""
    for folder in reversed([path, *path.parents]):
        if folder.exists():
            continue
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)


def create_private(path: Path) -> int:
    """Create `path` 0600 and return its descriptor, open for writing; FileExistsError if it is
    there already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Put `data` at `path` 0600 through a temporary file renamed over it (all or nothing)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        with os.fdopen(create_private(temporary), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def refuse_shared(fd: int, name: str) -> None:
    """Raise UnsafeFileMode when the open file `fd` (called `name`) is readable or writable by
    its group or others."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    access = [word for word, bits in (("readable", 0o044), ("writable", 0o022)) if mode & bits]
    if access:
        raise UnsafeFileMode(
            f"{name} is mode {mode:04o}: {' and '.join(access)} by others; chmod 600 it"
        )
