"""The store: migrations keep data across upgrades, and the secrets key guards private keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from certwatch.app.service import Service
from certwatch.store.db import MIGRATIONS, KeyBox, make_engine, migrate
from tests.certfactory import issue
from tests.conftest import make_config


def test_migrations_reach_head_and_keep_data(tmp_path: Path, store_url: str) -> None:
    """Starting twice on one store re-applies nothing and keeps every row."""
    first = Service(make_config(tmp_path, store_url))
    leaf = issue("a.example.com")
    cid = first.call(
        "UploadCertificate",
        {
            "CertificateName": "a",
            "CertificateType": "Server",
            "Certificate": leaf.chain_pem,
            "PrivateKey": leaf.key_pem,
        },
    )["CertificateId"]
    first.close()
    second = Service(make_config(tmp_path, store_url))
    assert second.call("GetCertificate", {"CertificateId": cid})["Certificate"]["Fingerprint"] == (
        leaf.fingerprint
    )
    script = ScriptDirectory.from_config(_alembic())
    with second.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == script.get_current_head()
        assert "certificates" in inspect(conn).get_table_names()
    second.close()


def _alembic() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_models_match_migrations(tmp_path: Path) -> None:
    """The migrated schema has every table and column the models declare (no missed migration)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_key_file_created_0600_and_wrong_key_is_explained(tmp_path: Path) -> None:
    """The secrets key is created mode 0600 once; a different key cannot open stored keys."""
    box = KeyBox.from_file(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    sealed = box.seal("secret")
    assert KeyBox.from_file(tmp_path / "k").open(sealed) == "secret"
    with pytest.raises(RuntimeError, match="secrets.key_file"):
        KeyBox.from_file(tmp_path / "other").open(sealed)


def test_upgrade_from_the_first_release_keeps_every_row(tmp_path: Path, store_url: str) -> None:
    """A store written by schema 0001 upgrades to the newest schema at start with its rows
    intact (an alert keeps its state; the column 0002 adds takes its default)."""
    engine = make_engine(store_url)
    config = _alembic()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO alerts (id, certificate_id, threshold, listener_ids, title, body, "
                "created_at, delivered, attempts) VALUES ('alr-1', 'cert-1', '7', '[]', 't', 'b', "
                "'2026-11-01 00:00:00', true, 1)"
            )
        )
    engine.dispose()
    upgraded = Service(make_config(tmp_path, store_url))
    with upgraded.engine.connect() as connection:
        row = connection.execute(
            text("SELECT threshold, delivered, attempts, delivered_to FROM alerts")
        ).one()
    assert (row[0], bool(row[1]), row[2]) == ("7", True, 1)
    assert row[3] in ("[]", [])
    upgraded.close()
