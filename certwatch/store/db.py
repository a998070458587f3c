"""The store: engine, schema migrations at start-up, sessions, private keys encrypted at rest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from certwatch.private_files import create_private, make_private_dirs, refuse_shared

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **connect_args: Any) -> Engine:
    """An engine for SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (psycopg 3)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            _create_sqlite_file(Path(path))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30, **connect_args}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _create_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (in a 0700 folder if that is new) before SQLite opens it;
    SQLite gives its -wal and -shm files the database file's mode."""
    make_private_dirs(path.parent)
    try:
        os.close(create_private(path))
    except FileExistsError:
        pass


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; existing data is kept."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def ping(engine: Engine) -> bool:
    """True when the store answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


class KeyBox:
    """Encrypts private keys at rest (Fernet: AES-128-CBC + HMAC) with the key in `key_file`."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: Path) -> KeyBox:
        """Load the key file, creating it with mode 0600 on first start; one that its group or
        others may read or write is refused (UnsafeFileMode)."""
        make_private_dirs(path.parent)
        try:
            fd = create_private(path)
        except FileExistsError:
            return cls._read(path)
        with os.fdopen(fd, "wb") as handle:
            key = Fernet.generate_key()
            handle.write(key)
        return cls(key)

    @classmethod
    def _read(cls, path: Path) -> KeyBox:
        """The key of an existing key file, unless its group or others may read or write it."""
        with path.open("rb") as handle:
            refuse_shared(handle.fileno(), f"secrets.key_file {path}")
            return cls(handle.read().strip())

    def seal(self, plain: str) -> bytes:
        """Encrypt a PEM key."""
        return self._fernet.encrypt(plain.encode())

    def open(self, sealed: bytes) -> str:
        """Decrypt a PEM key; a wrong secrets key is a clear error."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "a stored private key cannot be decrypted: secrets.key_file is not the key "
                "this store was written with"
            ) from exc
